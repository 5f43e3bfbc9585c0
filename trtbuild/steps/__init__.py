"""Step kinds. Each module defines:

    NAME               the step kind
    MAIN_OUTPUT        the file a downstream step opens
    OUTPUTS            optional: every file run() always writes (default: MAIN_OUTPUT alone)
    OPTIONAL_OUTPUTS   optional: files it may write besides
    EXTERNAL_DATA      optional, True: any other file is its ONNX model's external data
    READS              what the step reads (Reads): its parameters, input files and environment
                       variables make its key
    tools(params)      distributions whose versions go into the step key (must not import them)
    env(params)        optional: which of READS.env these parameters read (default: all of them)
    run(job)           does the work, writing every output file into job.outdir; returns metadata
    FRESH_PROCESS      optional, True: run in a worker process of its own (see trtbuild.execution.pool)
    IMPORTS            optional: the heavy modules run() imports, which a spare worker loads ahead

Modules import heavy libraries inside run(), which executes in a worker process. A step's code
version, in its key, is a digest of its module and the trtbuild modules it imports (steps.action).
Adding a step kind: one new module plus one line in KINDS.
"""

from __future__ import annotations

import functools
import importlib
import sys
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


@dataclass(frozen=True)
class Reads:
    """What a step kind reads, declared beside its run(): a worker gets these values and nothing else.

    params: exactly the recipe values the step uses; all of them, and only them, are in its key.
    files: the names its input files may have (also hashed into the key).
    context: what it gets outside the key, which must not change its output: where to blame a recipe
    value (file:line), the paths of files already hashed as inputs, the shared timing cache.
    env: the environment variables that can change its output (names, or prefixes ending in '_'):
    they reach the step and their values are in its key; no other variable reaches it (steps.action).
    """

    params: tuple[str, ...]
    files: tuple[str, ...]
    context: tuple[str, ...] = ()
    env: tuple[str, ...] = ()

    @functools.cached_property
    def _declared(self) -> tuple[frozenset, frozenset, frozenset]:
        return frozenset(self.params), frozenset(self.files), frozenset(self.context)

    def check(self, kind: str, params: dict, files: dict, context: dict) -> None:
        """A step built with a value its kind does not declare is a bug in trtbuild: fail at once."""
        declared = self._declared  # compiling checks every step: the usual answer without building sets
        if params.keys() == declared[0] and files.keys() <= declared[1] and context.keys() <= declared[2]:
            return
        wrong = [f"params {sorted(set(params) ^ set(self.params))}" if set(params) != set(self.params) else "",
                 f"files {sorted(set(files) - set(self.files))}" if set(files) - set(self.files) else "",
                 f"context {sorted(set(context) - set(self.context))}" if set(context) - set(self.context) else ""]
        if any(wrong):
            raise TypeError(f"{kind} step: not what its READS declares: {', '.join(w for w in wrong if w)}")


def use_gpu_of(job: Job) -> str | None:
    """Point this (fresh) worker's CUDA at the GPU the runner chose for the step's target, before any
    library initializes CUDA: NVML numbers GPUs its own way, so the choice travels as a UUID."""
    import os

    device = job.context.get("cuda_device")
    if device:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    return device


def at_each_profile(inputs: dict[str, dict], profiles: list[dict] | None) -> list[tuple[int, str | None, dict]]:
    """(index, name, input specs at that profile's opt shapes) for each optimization profile: what steps
    that run the model once per profile feed. `profiles`: [{"name", "opt": {INPUT: shape}}], None for one."""
    if not profiles:
        return [(0, None, inputs)]
    return [(i, p["name"], {n: s | ({"opt": p["opt"][n]} if n in p["opt"] else {}) for n, s in inputs.items()})
            for i, p in enumerate(profiles)]


def env_read(kind: ModuleType, params: dict) -> tuple[str, ...]:
    """The environment variables (names, or prefixes ending in '_') a step of this kind reads."""
    return kind.env(params) if hasattr(kind, "env") else kind.READS.env


def outputs_of(kind: ModuleType) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(names always written, names that may be, whether others may: external data): what a cached
    record of this kind must name (trtbuild.store.validate.record_inconsistent)."""
    return (getattr(kind, "OUTPUTS", (kind.MAIN_OUTPUT,)), getattr(kind, "OPTIONAL_OUTPUTS", ()),
            getattr(kind, "EXTERNAL_DATA", False))


def load_kind(name: str) -> ModuleType:
    module = KINDS[name]
    return sys.modules.get(module) or importlib.import_module(module)  # compiling asks once per step
