"""What every benchmark needs."""

from __future__ import annotations

import compileall
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def compile_bytecode() -> None:
    """Write trtbuild's .pyc files as an install would (PYTHONDONTWRITEBYTECODE leaves an editable
    checkout without them, and every process would then compile trtbuild again)."""
    compileall.compile_dir(REPO / "trtbuild", quiet=1)
