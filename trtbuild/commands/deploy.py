"""Which built plan a service on this machine should load: the one for its GPU and TensorRT version.

    from trtbuild.commands.deploy import find_plan
    plan = find_plan("resnet50", cache_dir="cache")   # raises DeployError on any mismatch
"""

from __future__ import annotations

import json
from pathlib import Path

from trtbuild.errors import TrtbuildError
from trtbuild.backends.gpu import detect_gpus
from trtbuild.backends.target import gpu_model_id, installed_version


class DeployError(TrtbuildError):
    """No plan here fits this machine; the message says what exists and what the machine has."""


def find_plan(name: str, cache_dir: str | Path = "cache", gpu_index: int = 0, target: str | None = None) -> Path:
    """The plan for recipe `name` that deserializes on GPU `gpu_index` with the installed TensorRT.

    Prefers full TensorRT built for exactly this SM, then TensorRT-RTX built for this compute
    capability, then a portable TensorRT-RTX plan. With `target` ("tensorrt-rtx", "tensorrt:sm86"):
    that target's plan, on any machine, GPU or not.
    """
    out = Path(cache_dir) / "out" / name
    out = out.resolve() if out.is_symlink() else out  # one build's files, even while a new one is published
    plans = sorted(out.glob("*/model.plan"))
    if not plans:
        raise DeployError(f"no plans for {name!r} under {out}: build it with `trtbuild` first")
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
    versions = {b: installed_version(b) or "not installed" for b in ("tensorrt", "tensorrt-rtx")}
    raise DeployError(
        f"none of the plans for {name!r} runs here: built {', '.join(p.parent.name for p in plans)}; this machine has "
        f"{gpu.name} (sm_{gpu.compute_capability.replace('.', '')}), TensorRT {versions['tensorrt']}, "
        f"TensorRT-RTX {versions['tensorrt-rtx']}. Rebuild here with `trtbuild` (a plan only deserializes "
        "with the TensorRT version and GPU architecture it was built for)."
    )


def _plan_for_target(name: str, plans: list[Path], spec: str) -> Path:
    """The plan built for target `spec`, preferring the installed backend version."""
    backend, _, arch = spec.partition(":")
    wanted_arch = arch or ("portable" if backend == "tensorrt-rtx" else None)  # tensorrt: its one GPU's SM
    found = []
    for plan in plans:
        meta = json.loads(plan.with_name("model.json").read_text())
        built = meta["compute_capabilities"]
        built_arch = "portable" if built == "portable" else "+".join("sm" + cc.replace(".", "") for cc in built)
        if backend not in ("auto", meta["backend"]) or wanted_arch not in (None, built_arch):
            continue
        found.append((meta["backend_version"] == installed_version(meta["backend"]), plan))
    if not found:
        raise DeployError(f"no {spec} plan for {name!r}; built: {', '.join(p.parent.name for p in plans)}")
    return max(found)[1]


def _fit(meta: dict, cc: str, model: str) -> int | None:
    """0 = exact TensorRT plan, 1 = TensorRT-RTX for this compute capability, 2 = portable; None = won't load."""
    if meta["backend_version"] != installed_version(meta["backend"]):
        return None
    if meta.get("gpu_model") not in (None, model):  # built without same-compute-capability compatibility
        return None
    caps = meta["compute_capabilities"]
    if meta["backend"] == "tensorrt":
        return 0 if caps == [cc] else None
    if caps == "portable":
        return 2 if cc.split(".")[0] in ("8", "12") else None
    return 1 if cc in caps else None
