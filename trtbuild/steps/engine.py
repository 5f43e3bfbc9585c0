"""engine: build a serialized TensorRT plan for one target."""

from __future__ import annotations

import json
from pathlib import Path

from trtbuild.backends.engine import build_engine
from trtbuild.steps import Job, Reads, use_gpu_of
from trtbuild.backends.target import target_from_dict

NAME = "engine"
MAIN_OUTPUT = "model.plan"
OUTPUTS = (MAIN_OUTPUT, "model.json")  # exactly these: a record naming others is not this step's
READS = Reads(params=("inputs", "precision", "workspace", "optimization_level", "target", "profiles"),
              files=("model",), context=("timing_cache", "cuda_device"))
IMPORTS = ()  # a spare worker loads these before this step comes
# Its input model's external data is hard-linked from the cache, not copied: the engine step maps it (see
# backends/weight_maps.py; TensorRT's parser reads what is not mapped) and, unlike onnx's loader, takes
# hard links. A large model's weights are not copied once more for the build.
LINKED_DATA = True
# Engines build in warm workers (TensorRT loads once per worker, not once per engine). Plans are
# keyed by their inputs, not their bytes: a second build in one process may differ by a few bytes.
# A step pinned to a GPU (full TensorRT, cuda_device) gets a fresh worker: CUDA reads
# CUDA_VISIBLE_DEVICES once per process.


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
