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
    AFTER              the kinds it is planned after (its upstream kinds: their steps, the model as
                       they leave it); BEFORE, optional: kinds planned after it (a gate before "engine")
    plan(p)            its step(s) for one recipe, or None where it does not apply: p is a
                       trtbuild.planning.context.Planning (the recipe, the steps planned so far, the
                       helpers that make steps); a plug-in kind's plan(p, params) also gets its entry
                       of the recipe's `steps`, validated by its PARAMS (a pydantic model)
    GATE               optional, True: an engine waits for it to pass
    FRESH_PROCESS      optional, True: run in a worker process of its own (see trtbuild.execution.pool)
    IMPORTS            optional: the heavy modules run() imports, which a spare worker loads ahead;
                       imports(params), optional, instead: those of one step (an engine's backend)
    AHEAD_OF_GATES     optional, True: may build while its gates still run, kept only once they pass
                       (trtbuild.execution.ahead); its key must hold nothing a gate makes

Modules import heavy libraries inside run(), which executes in a worker process. A step's code
version, in its key, is a digest of its module and the trtbuild modules it imports (steps.action).
The repro script of a step calls its own run() (trtbuild.execution.repro).
Adding a step kind: one new module plus one line in KINDS; a plug-in kind, which a recipe asks for in
its `steps`, is the module trtbuild_step_<NAME> wherever Python finds it, or one register_kind() names.
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

# What steps that run the model once, at each input's opt shapes, read of the input specs (p.read(*AT_OPT)).
AT_OPT = ("dtype", "shape", "opt")

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


PLUGINS: dict[str, str] = {}  # plug-in kinds named by register_kind (jobs carry them: execution.registered)


def register_kind(name: str, module: str) -> None:
    """Name a plug-in step kind's module (a build from this process carries it to its workers: execution.registered)."""
    PLUGINS[name] = module


def plugin_kinds() -> dict[str, str]:
    """{kind: module} of the plug-in kinds this process finds: each trtbuild_step_NAME on sys.path, and
    those register_kind named."""
    import pkgutil

    prefix = "trtbuild_step_"
    found = {m.name[len(prefix):]: m.name for m in pkgutil.iter_modules() if m.name.startswith(prefix)}
    return found | PLUGINS


def loaded_kinds() -> list[ModuleType]:
    """Every built-in kind and each plug-in kind this process has loaded (planning loads those recipes ask for)."""
    plugins = [m for name, m in list(sys.modules.items()) if name.startswith("trtbuild_step_") or name in PLUGINS.values()]
    return [load_kind(kind) for kind in KINDS] + plugins


def module_name(name: str) -> str | None:
    """The module of step kind `name`, or None when there is none."""
    found = KINDS.get(name) or PLUGINS.get(name)
    if found is not None:
        return found
    import importlib.util

    convention = "trtbuild_step_" + name.replace("-", "_")
    try:
        return convention if importlib.util.find_spec(convention) is not None else None
    except (ImportError, ValueError):
        return None


def load_kind(name: str) -> ModuleType:
    module = module_name(name)
    if module is None:
        raise KeyError(f"no step kind {name!r}")
    return sys.modules.get(module) or importlib.import_module(module)  # compiling asks once per step
