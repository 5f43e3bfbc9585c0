"""A model over protobuf's 2 GB limit, end to end: check, simplify and a TensorRT-RTX engine.

    python bench/large_model.py

Writes a MatMul with a 23200 x 23200 float32 weight (2.15 GB) as an ONNX file plus external data,
streamed to disk so no 2 GB message is ever built here, then builds it cold and again (no-op).
Needs about 7 GB of memory and 9 GB of disk (model, simplified copy, published copy, plan).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from common import compile_bytecode

SIZE = 23200

RECIPE = f"""\
name: large
source: {{framework: onnx, path: large.onnx}}
inputs:
  x: {{shape: [-1, {SIZE}], min: [1, {SIZE}], opt: [2, {SIZE}], max: [4, {SIZE}]}}
engine: {{backend: tensorrt-rtx, workspace: 1GiB, optimization_level: 0}}
"""


def write_model(work: Path) -> None:
    rng = np.random.default_rng(0)
    with open(work / "large.onnx.data", "wb") as data:
        for start in range(0, SIZE, 1000):  # in slices: the whole weight never sits in memory
            rows = min(1000, SIZE - start)
            data.write((rng.standard_normal((rows, SIZE), dtype=np.float32) * 0.01).tobytes())
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[SIZE, SIZE], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "large.onnx.data"), ("offset", "0"), ("length", str(SIZE * SIZE * 4))):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", SIZE])], [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), work / "large.onnx")
    (work / "large.yaml").write_text(RECIPE)


def build(work: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trtbuild", str(work / "large.yaml"), "--cache-dir", str(work / "cache"),
                    "--report", str(work / "report.json"), "--quiet"], check=True)
    wall = time.perf_counter() - started
    return wall, {s["step"]: (s["status"], s["seconds"]) for s in json.loads((work / "report.json").read_text())["steps"]}


def main() -> None:
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="trtbuild-bench-"))
    try:
        write_model(work)
        cold, steps = build(work)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        print(f"cold build: {cold:.1f} s; " + ", ".join(f"{k} {s} {t:.1f} s" for k, (s, t) in steps.items()))
        print(f"largest process: {peak:.1f} GiB")
        again, steps = build(work)
        print(f"no-op build: {again:.2f} s; " + ", ".join(f"{k} {s}" for k, (s, _) in steps.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
