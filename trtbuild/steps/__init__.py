"""Step kinds. Each module defines:

    NAME, VERSION      VERSION is bumped when the output for the same inputs changes
    MAIN_OUTPUT        the file a downstream step opens
    tools(params)      distributions whose versions go into the step key (must not import them)
    run(job)           does the work, writing every output file into job.outdir; returns metadata
    FRESH_PROCESS      optional, True: run in a worker process of its own (see trtbuild.pool)

Modules import heavy libraries inside run(), which executes in a worker process.
Adding a step kind: one new module plus one line in KINDS.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

KINDS = {
    "check": "trtbuild.steps.check",
    "export": "trtbuild.steps.export",
    "parity": "trtbuild.steps.parity",
    "simplify": "trtbuild.steps.simplify",
    "precision": "trtbuild.steps.precision",
    "accuracy": "trtbuild.steps.accuracy",
    "engine": "trtbuild.steps.engine",
    "verify": "trtbuild.steps.verify",
}


@dataclass
class Job:
    """What a worker gets: parameters (in the key), input files, an output directory, context (not in the key)."""

    kind: str
    params: dict
    inputs: dict[str, Path]
    outdir: Path
    context: dict


def load_kind(name: str) -> ModuleType:
    return importlib.import_module(KINDS[name])


@functools.cache
def tool_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
