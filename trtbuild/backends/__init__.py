"""TensorRT backends, one module each behind one small interface; targets, the engine builder,
repro scripts and `trtbuild env` ask the backend of a target instead of naming backends.

A backend module defines:

    NAME, MODULE, DISTRIBUTION   "tensorrt-rtx", its Python module, the distribution that installs it
    INSTALL_HINT                 how to install it
    BUILDS_ON_GPU                True when building needs the GPU the plan is for (full TensorRT)
    TIMING_CACHE                 whether the builder's timing cache does anything
    resolve(spec, caps)          the Target for a spec and its compute capabilities, and why this machine
                                 cannot build it (None when it can); UsageError for a spec it never builds
    usable_gpus(target, gpus)    the GPUs (backends.gpu.Gpu) that run plans of `target`: a plan's compatibility
    needs(target)                the compute capabilities a runner needs, for messages
    runs_on(target)              where its plans run, for model.json
    configure(trt, config, target)  the builder configuration the target asks for: self-contained (only its
                                 arguments), as the repro script runs the function's own source

Built-in backends are listed in REGISTRY; any other NAME is the module `trtbuild_backend_<NAME with - as _>`
wherever Python finds it (worker processes find it on the same path), or one `register()` names.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

REGISTRY = {"tensorrt": "trtbuild.backends.tensorrt", "tensorrt-rtx": "trtbuild.backends.tensorrt_rtx"}


def register(name: str, module: str) -> None:
    """Name a backend module (in this process; a module named by the convention is found everywhere)."""
    REGISTRY[name] = module


def module_name(name: str) -> str | None:
    """The module of backend `name`, or None when there is none."""
    if name in REGISTRY:
        return REGISTRY[name]
    convention = "trtbuild_backend_" + name.replace("-", "_")
    return convention if importlib.util.find_spec(convention) is not None else None


def backend(name: str) -> ModuleType:
    from trtbuild.errors import UsageError

    module = module_name(name)
    if module is None:
        raise UsageError(f"unknown backend {name!r}: the backends are {', '.join(REGISTRY)} (a backend NAME is a "
                         f"module trtbuild_backend_NAME, with - as _)")
    return sys.modules.get(module) or importlib.import_module(module)  # a no-op build asks once per step
