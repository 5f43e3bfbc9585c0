"""Which built plan a service on this machine should load: the one for its GPU and TensorRT version.

    from trtbuild.commands.deploy import find_plan
    plan = find_plan("resnet50")   # raises DeployError on any mismatch

The path returned is the stable `out/<recipe>/<target>/model.plan`: a publish swaps the whole of
out/<recipe>/ in one rename, so the path stays valid across rebuilds (it then holds the new build's
plan for the same target, TensorRT version and GPU architecture) until that target leaves the recipe
or its current key fails to build.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from trtbuild.errors import TrtbuildError
from trtbuild.backends import names as backend_names
from trtbuild.backends import backend as backend_module
from trtbuild.backends.gpu import detect_gpus
from trtbuild.backends.target import gpu_model_id, installed_version, supports_fp8

_ATTEMPTS = 20  # consistent reads of out/<recipe>/ tried while publishes swap it


class DeployError(TrtbuildError):
    """No plan here fits this machine; the message says what exists and what the machine has."""


def find_plan(name: str, cache_dir: str | Path | None = None, gpu_index: int = 0, target: str | None = None) -> Path:
    """The plan for recipe `name` that deserializes on GPU `gpu_index` with the installed TensorRT.

    Prefers full TensorRT built for exactly this SM, then TensorRT-RTX built for this compute
    capability, then a portable TensorRT-RTX plan. With `target` ("tensorrt-rtx", "tensorrt:sm86"):
    that target's plan, on any machine, GPU or not. `cache_dir`: TRTBUILD_CACHE_DIR, else ./cache.
    """
    cache_dir = cache_dir if cache_dir is not None else os.environ.get("TRTBUILD_CACHE_DIR", "cache")
    link = Path(cache_dir).absolute() / "out" / name
    for _ in range(_ATTEMPTS):
        shown = _shown(link)
        try:  # one build's files, read while a new one may be swapped in and the old one removed
            found = _choose(name, shown or link, gpu_index, target)
        except (OSError, ValueError, KeyError, DeployError):
            if shown is not None and _shown(link) != shown:
                continue  # swapped while being read: read the new build
            raise
        if _shown(link) == shown:
            return link / found.parent.name / found.name
    raise DeployError(f"{link} changed on every one of {_ATTEMPTS} reads: is a build publishing it in a loop?")


def _shown(link: Path) -> Path | None:
    """The build folder out/<recipe> points at (None for a plain folder or none)."""
    try:
        return link.parent / os.readlink(link)
    except OSError:
        return None


def _choose(name: str, out: Path, gpu_index: int, target: str | None) -> Path:
    plans = sorted(out.glob("*/model.plan"))
    if not plans:
        raise DeployError(f"no plans for {name!r} under {out.parent / name}: build it with `trtbuild` first")
    if target is not None:
        return _plan_for_target(name, plans, target)
    gpus = detect_gpus()
    if len(gpus) <= gpu_index:
        raise DeployError(f"no NVIDIA GPU {gpu_index} on this machine: a TensorRT plan runs only on a GPU "
                          f"(built here: {', '.join(p.parent.name for p in plans)})")
    gpu = gpus[gpu_index]
    ranked = []
    for plan in plans:
        meta = json.loads(plan.with_name("model.json").read_text())
        rank = _fit(meta, gpu.compute_capability, gpu_model_id(gpu.name))
        if rank is not None:
            ranked.append((rank, plan))
    if ranked:
        return min(ranked)[1]
    versions = ", ".join(f"{getattr(backend_module(b), 'TITLE', b)} {installed_version(b) or 'not installed'}"
                         for b in backend_names())
    raise DeployError(
        f"none of the plans for {name!r} runs here: built {', '.join(p.parent.name for p in plans)}; this machine has "
        f"{gpu.name} (sm_{gpu.compute_capability.replace('.', '')}), {versions}. Rebuild here with `trtbuild` (a plan only deserializes "
        "with the TensorRT version and GPU architecture it was built for)."
    )


def _plan_for_target(name: str, plans: list[Path], spec: str) -> Path:
    """The plan of target `spec` ("tensorrt-rtx:sm89"): one built for exactly those compute
    capabilities, else one whose compute capabilities cover them (sm89+sm120 covers sm89; a portable
    TensorRT-RTX plan covers 8.x and 12.x), preferring the installed backend version."""
    backend, _, arch = spec.partition(":")
    wanted = _caps(arch) if arch and arch != "portable" else None
    found = []
    for plan in plans:
        meta = json.loads(plan.with_name("model.json").read_text())
        built = meta["compute_capabilities"]
        if backend not in ("auto", meta["backend"]):
            continue
        if arch == "portable" or (not arch and backend != "auto" and backend_module(backend).PORTABLE_BY_DEFAULT):
            fit = 0 if built == "portable" else None
        elif wanted is None:  # tensorrt: its one GPU's SM
            fit = 0
        else:
            ranks = [covers(meta, cc) for cc in wanted]
            fit = None if None in ranks else 0 if built != "portable" and set(built) == wanted else 1 + max(ranks)
        if fit is not None:
            found.append((meta["backend_version"] == installed_version(meta["backend"]), -fit, plan))
    if not found:
        raise DeployError(f"no {spec} plan for {name!r}; built: {', '.join(p.parent.name for p in plans)} (none "
                          "built for, or covering, the compute capabilities asked)")
    return max(found)[2]


def _caps(arch: str) -> set[str]:
    """"sm89+sm120" -> {"8.9", "12.0"}."""
    return {f"{sm[2:-1]}.{sm[-1]}" for sm in arch.split("+")}


def _fit(meta: dict, cc: str, model: str) -> int | None:
    """0 = exact TensorRT plan, 1 = TensorRT-RTX for this compute capability, 2 = portable; None = won't load."""
    if meta["backend_version"] != installed_version(meta["backend"]):
        return None
    if meta.get("gpu_model") not in (None, model):  # built without same-compute-capability compatibility
        return None
    return covers(meta, cc)


def covers(meta: dict, cc: str) -> int | None:
    """Whether the plan `meta` (its model.json) runs on a GPU of compute capability `cc`, whatever the
    TensorRT installed: 0 = a full TensorRT plan for it, 1 = TensorRT-RTX built for it, 2 = a portable
    TensorRT-RTX plan (8.x and 12.x, not Hopper); None = it does not run there. An fp8 plan needs 8.9+."""
    if meta.get("precision") == "fp8" and not supports_fp8(cc):
        return None
    return backend_module(meta["backend"]).plan_fit(meta["compute_capabilities"], cc)
