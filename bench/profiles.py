"""Optimization profiles: build seconds and plan size of one engine with 1, 2 and 4 profiles.

A [N, S, 8] MatMul + Relu model (dynamic batch and sequence), built with TensorRT-RTX (portable) at
optimization levels 0 and 3, each build in a fresh process (the first build in a process is the
reproducible one). Usage: python bench/profiles.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RANGES = [([1, 1, 8], [1, 16, 8], [4, 64, 8]), ([1, 32, 8], [2, 128, 8], [8, 256, 8]),
          ([1, 256, 8], [1, 512, 8], [2, 1024, 8]), ([8, 1, 8], [16, 8, 8], [32, 16, 8])]
BUILD = r'''
import json, sys
from pathlib import Path
from trtbuild.backends.engine import build_engine
from trtbuild.backends.target import resolve_target
profiles = json.loads(sys.argv[1])
target, _ = resolve_target("tensorrt-rtx")
meta = build_engine(Path(sys.argv[2]), Path(sys.argv[3]), target, profiles, 1 << 30, int(sys.argv[4]), None)
print(json.dumps({"seconds": meta["build_seconds"], "bytes": meta["plan_bytes"]}))
'''


def model(path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "S", 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "seq.onnx"
        model(onnx_path)
        print("| profiles | level | median build | plan bytes |\n| --- | --- | --- | --- |")
        for level in (0, 3):
            for count in (1, 2, 4):
                profiles = [{"name": f"p{i}", "inputs": {"x": dict(zip(("min", "opt", "max"), RANGES[i]))}}
                            for i in range(count)]
                runs = [json.loads(subprocess.run(
                    [sys.executable, "-c", BUILD, json.dumps(profiles), str(onnx_path), str(Path(tmp) / "m.plan"),
                     str(level)], capture_output=True, text=True, check=True, cwd=REPO,
                    env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout.splitlines()[-1])
                        for _ in range(args.repeat)]
                print(f"| {count} | {level} | {statistics.median(r['seconds'] for r in runs):.3f} s | {runs[0]['bytes']} |")


if __name__ == "__main__":
    main()
