"""engine: build a serialized TensorRT plan for one target."""

from __future__ import annotations

import json
from pathlib import Path

from trtbuild.engine import build_engine
from trtbuild.steps import Job, Reads, use_gpu_of
from trtbuild.target import target_from_dict

NAME = "engine"
MAIN_OUTPUT = "model.plan"
READS = Reads(params=("inputs", "precision", "workspace", "optimization_level", "target"),
              files=("model",), context=("timing_cache", "cuda_device"))
# A builder's first build in a process is byte-reproducible (later ones can differ by a few bytes),
# and the memory it took goes back to the system.
FRESH_PROCESS = True


def tools(params: dict) -> tuple[str, ...]:
    return ()  # the backend and its version are part of the target, which is in the params


def run(job: Job) -> dict:
    gpu = use_gpu_of(job)
    params = job.params
    profile = {name: (s["min"], s["opt"], s["max"]) for name, s in params["inputs"].items()}
    target = target_from_dict(params["target"])
    timing_cache = job.context.get("timing_cache")
    meta = build_engine(
        onnx_path=job.inputs["model"],
        plan_path=job.outdir / "model.plan",
        target=target,
        profile=profile,
        workspace=params["workspace"],
        optimization_level=params["optimization_level"],
        timing_cache=Path(timing_cache) if timing_cache else None,
        tf32=params["precision"] == "tf32",
    )
    meta["precision"] = params["precision"]
    meta["built_on_gpu"] = gpu
    (job.outdir / "model.json").write_text(json.dumps(meta, indent=2))
    return meta
