"""engine: build a serialized TensorRT plan for one target."""

from __future__ import annotations

import json
import os
from pathlib import Path

from trtbuild.backends import backend
from trtbuild.backends.engine import build_engine
from trtbuild.steps import Job, Reads, use_gpu_of
from trtbuild.backends.target import target_from_dict

NAME = "engine"
MAIN_OUTPUT = "model.plan"
OUTPUTS = (MAIN_OUTPUT, "model.json")  # exactly these: a record naming others is not this step's
READS = Reads(params=("inputs", "precision", "workspace", "optimization_level", "target", "profiles"),
              files=("model",), context=("timing_cache", "cuda_device"))
# Its input model's external data is hard-linked from the cache, not copied: the engine step maps it (see
# backends/weight_maps.py; TensorRT's parser reads what is not mapped) and, unlike onnx's loader, takes
# hard links. A large model's weights are not copied once more for the build.
LINKED_DATA = True
# It may build while its gates (check, parity, accuracy) still run, on a build thread that is free: its plan
# is recorded only once they pass, and a gate that fails cancels it (trtbuild.execution.ahead). Its key
# holds nothing a gate makes.
AHEAD_OF_GATES = True
# Engines build in warm workers (TensorRT loads once per worker, not once per engine). Plans are
# keyed by their inputs, not their bytes: a second build in one process may differ by a few bytes.
# A step pinned to a GPU (full TensorRT, cuda_device) gets a fresh worker: CUDA reads
# CUDA_VISIBLE_DEVICES once per process.


def imports(params: dict) -> tuple[str, ...]:
    """What a spare worker loads before this step comes: its target's backend where importing it touches no
    GPU (PRELOAD: a worker may later run a step pinned to a GPU). TensorRT-RTX takes a tenth of a second to
    load: the first engine of a worker no longer waits for it."""
    kind = backend(params["target"]["backend"])
    return (kind.MODULE,) if kind.PRELOAD else ()


def tools(params: dict) -> tuple[str, ...]:
    return ()  # the backend and its version are part of the target, which is in the params


def run(job: Job) -> dict:
    gpu = use_gpu_of(job)
    params = job.params
    profiles = params["profiles"] or [{"name": None, "inputs": params["inputs"]}]
    target = target_from_dict(params["target"])
    timing_cache = job.context.get("timing_cache")
    meta = build_engine(
        onnx_path=job.inputs["model"],
        plan_path=job.outdir / "model.plan",
        target=target,
        profiles=profiles,
        workspace=params["workspace"],
        optimization_level=params["optimization_level"],
        timing_cache=Path(timing_cache) if timing_cache else None,
        tf32=params["precision"] == "tf32",
    )
    meta["precision"] = params["precision"]
    meta["built_on_gpu"] = gpu
    (job.outdir / "model.json").write_text(json.dumps(meta, indent=2))
    return meta


AFTER = ("check", "parity", "simplify", "precision", "accuracy")


def plan(p):
    """One engine per target, built from the model as the steps before left it, after every gate passed."""
    recipe = p.recipe
    precision = recipe.engine.precision
    engines = []
    for spec, target, cannot_build in p.targets:
        if precision == "fp8":
            cannot_build = cannot_build or _fp8_unsupported(p, spec, target)
        _refused_precision(p, spec, target, backend(target.backend))
        params = {
            "inputs": p.inputs,
            "precision": precision,
            "workspace": int(recipe.engine.workspace),
            "optimization_level": recipe.engine.optimization_level,
            "target": target.to_dict(),
            "profiles": p.profiles,  # None: one profile, the inputs' min / opt / max
        }
        engines.append(p.step(NAME, params, {"model": p.model}, p.out / target.id, target=target,
                              context={"timing_cache": os.path.join(p.cache.timing, f"{target.id}.cache")}
                              | p.machine.builder(target),
                              after=p.gates(), skip_reason=cannot_build))
    return engines


def _fp8_unsupported(p, spec: str, target) -> str | None:
    """fp8 needs sm_89 or newer: a recipe or --target naming an older SM is a mistake; an older local
    GPU (full TensorRT builds for the GPU it finds) only means this machine cannot build it."""
    from trtbuild.backends.target import supports_fp8

    older = [cc for cc in target.compute_capabilities if not supports_fp8(cc)]
    if not older:
        return None
    sms = ", ".join("sm_" + cc.replace(".", "") for cc in older)
    if ":" in spec:
        raise p.recipe_error(("engine", "precision"), f"engine.precision fp8 needs sm_89 or newer, but target {spec!r} "
                             f"includes {sms}; build fp8 for sm89 / sm120 targets only, or choose int8")
    return f"fp8 engines need a GPU with sm_89 or newer (this machine's is {sms})"


def _refused_precision(p, spec: str, target, chosen) -> None:
    """A precision the target's backend says it cannot build for those compute capabilities (int8 for
    TensorRT-RTX's sm_75) is refused here with the reason, not after calibrating, with the builder's text."""
    precision = p.recipe.engine.precision
    why = chosen.refuses(precision, target.compute_capabilities)
    if why:
        raise p.recipe_error(("engine", "precision"), f"engine.precision {precision} cannot be built for "
                             f"{', '.join('sm_' + cc.replace('.', '') for cc in target.compute_capabilities)} "
                             f"(target {spec!r}): {why}")
