"""TensorRT backends, one module each behind one small interface; targets, the engine builder,
`trtbuild env` and the engine step ask the backend of a target instead of naming backends.

A backend module defines:

    NAME, MODULE, DISTRIBUTION   "tensorrt-rtx", its Python module, the distribution that installs it
    TITLE                        how messages name it ("TensorRT-RTX")
    INSTALL_HINT                 how to install it
    BUILDS_ON_GPU                True when building needs the GPU the plan is for (full TensorRT)
    TIMING_CACHE                 whether the builder's timing cache does anything
    PORTABLE_BY_DEFAULT          whether a target naming no compute capability is a portable plan
    PRELOAD                      True when importing MODULE touches no GPU: a worker may load it ahead
    TRITON_PLATFORM              how Triton serves its plans: "tensorrt_plan", or "python" (a Python-backend model)
    POLYGRAPHY_RTX               the value of POLYGRAPHY_USE_TENSORRT_RTX for Polygraphy's runners
    FARM_OFFER                   the pattern of the Ray resource a farm node offers for it (execution.farm)
    resolve(spec, caps)          the Target for a spec and its compute capabilities, and why this machine
                                 cannot build it (None when it can); UsageError for a spec it never builds
    usable_gpus(target, gpus)    the GPUs (backends.gpu.Gpu) that run plans of `target`: a plan's compatibility
    needs(target)                the compute capabilities a runner needs, for messages
    runs_on(target)              where its plans run, for model.json
    configure(trt, config, target)  the builder configuration the target asks for (only from its arguments)
    plan_fit(caps, cc)           whether a plan built for `caps` runs on compute capability `cc` (a rank, or None)
    refuses(precision, caps)     why it cannot build that precision for those compute capabilities, or None
    run_capabilities(target)     the compute capabilities its plans run on
    farm_offers(version, gpus, cores), farm_build_resource(target), farm_needs(target)   what a farm node
                                 offers and a step asks for (execution.farm)

Everything from TITLE on is optional: `backend()` gives a module that lacks one the default in _DEFAULTS.
Built-in backends are listed in REGISTRY; any other NAME is the module `trtbuild_backend_<NAME with - as _>`
wherever Python finds it (worker processes find it on the same path), or one `register()` names.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

REGISTRY = {"tensorrt": "trtbuild.backends.tensorrt", "tensorrt-rtx": "trtbuild.backends.tensorrt_rtx"}
BUILT_IN = frozenset(REGISTRY)
CONVENTION = "trtbuild_backend_"


def register(name: str, module: str) -> None:
    """Name a backend module (a build from this process carries it to its workers: trtbuild.execution.registered)."""
    REGISTRY[name] = module


def module_name(name: str) -> str | None:
    """The module of backend `name`, or None when there is none."""
    if name in REGISTRY:
        return REGISTRY[name]
    convention = CONVENTION + name.replace("-", "_")
    if not name.replace("-", "_").isidentifier():
        return None
    return convention if importlib.util.find_spec(convention) is not None else None


def names() -> list[str]:
    """Every backend: the registered ones, then the modules found on Python's path by the convention
    (imported, for their NAME): what `trtbuild env`, the schema's and the command line's errors list."""
    import pkgutil  # only when the names are listed: a build asks for one backend by name

    found = {getattr(backend_module, "NAME", None) for backend_module in
             (importlib.import_module(m.name) for m in pkgutil.iter_modules() if m.name.startswith(CONVENTION))}
    return [*REGISTRY, *sorted(n for n in found if isinstance(n, str) and n not in REGISTRY)]


def choices_text() -> str:
    return (f"the backends are {', '.join(names())} (a backend NAME is a module {CONVENTION}NAME on Python's "
            "path, with - as _)")


def backend(name: str) -> ModuleType:
    from trtbuild.errors import UsageError

    module = module_name(name)
    if module is None:
        raise UsageError(f"unknown backend {name!r}: {choices_text()}")
    found = sys.modules.get(module)  # a no-op build asks once per step
    if found is None:
        found = importlib.import_module(module)
        for attribute, default in _DEFAULTS.items():
            if not hasattr(found, attribute):
                setattr(found, attribute, default(found) if attribute.isupper() else default)
    return found


_DEFAULTS = {
    "TITLE": lambda b: b.NAME,
    "PORTABLE_BY_DEFAULT": lambda b: False,
    "PRELOAD": lambda b: False,
    "TRITON_PLATFORM": lambda b: {"tensorrt": "tensorrt_plan", "tensorrt_rtx": "python"}.get(b.MODULE),
    "POLYGRAPHY_RTX": lambda b: b.MODULE == "tensorrt_rtx",
    "FARM_OFFER": lambda b: rf"^trtbuild-build-{b.NAME}-(?P<version>.+)$",
    "plan_fit": lambda caps, cc: 1 if caps != "portable" and cc in caps else None,
    "refuses": lambda precision, caps: None,
    "run_capabilities": lambda target: target.compute_capabilities,
    "farm_offers": lambda version, gpus, cores: [],
    "farm_build_resource": lambda target: f"build-{target.id}",
    "farm_needs": lambda target: f"a node that builds {target.id}",
}
