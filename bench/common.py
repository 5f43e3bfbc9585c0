"""What every benchmark needs."""

from __future__ import annotations

import compileall
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def compile_bytecode() -> None:
    """Write trtbuild's .pyc files as an install would (PYTHONDONTWRITEBYTECODE leaves an editable
    checkout without them, and every process would then compile trtbuild again)."""
    compileall.compile_dir(REPO / "trtbuild", quiet=1)


def checkout(against: str, folder: Path) -> Path:
    """`against` as a folder holding a trtbuild package: itself, or a commit's package written to `folder`."""
    if Path(against).is_dir():
        return Path(against)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", against, "trtbuild"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder
