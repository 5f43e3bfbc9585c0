"""Cold build of recipes/resnet50.yaml: per-step timings, and trtbuild's overhead over a plain script
that makes the same calls in one process (torch.onnx export -> onnx.checker -> ONNX Runtime parity
-> onnx-simplifier -> TensorRT-RTX build).

    python bench/resnet50.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, compile_bytecode


PLAIN_SCRIPT = r'''
import sys, time
t0 = time.perf_counter()
import numpy as np, onnx, onnxruntime, onnxsim, torch, torchvision
import tensorrt_rtx as trt
out = sys.argv[1]
torch.manual_seed(0)
model = torchvision.models.resnet50(weights=None).eval()
x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
with torch.no_grad():
    torch.onnx.export(model, (torch.from_numpy(x),), f"{out}/model.onnx", opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "input_0"}}, dynamo=False)
    expected = model(torch.from_numpy(x)).numpy()
onnx.checker.check_model(f"{out}/model.onnx", full_check=True)
actual = onnxruntime.InferenceSession(f"{out}/model.onnx", providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
assert np.allclose(actual, expected, atol=1e-3, rtol=1e-3)
simplified, ok = onnxsim.simplify(f"{out}/model.onnx", check_n=1, test_input_shapes={"input": [4, 3, 224, 224]})
onnx.save(simplified, f"{out}/simplified.onnx")
logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)
network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
parser = trt.OnnxParser(network, logger)
assert parser.parse_from_file(f"{out}/simplified.onnx")
config = builder.create_builder_config()
config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2 << 30)
config.builder_optimization_level = 3
config.clear_flag(trt.BuilderFlag.TF32)
profile = builder.create_optimization_profile()
profile.set_shape("input", (1, 3, 224, 224), (4, 3, 224, 224), (8, 3, 224, 224))
config.add_optimization_profile(profile)
plan = builder.build_serialized_network(network, config)
open(f"{out}/model.plan", "wb").write(memoryview(plan))
print(time.perf_counter() - t0)
'''


def trtbuild_cold(work: Path, jobs: int) -> tuple[float, dict]:
    cache, report = work / f"cache-j{jobs}", work / f"report-j{jobs}.json"
    shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trtbuild", str(work / "recipes" / "resnet50.yaml"), "--cache-dir", str(cache),
                    "-j", str(jobs), "--report", str(report), "--quiet"], check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    steps = {s["step"]: s["seconds"] for s in json.loads(report.read_text())["steps"]}
    return wall, steps


def plain(work: Path) -> tuple[float, float]:
    """(wall time, the script's own time: from its first import to its last line, before teardown)."""
    out = work / "plain"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, str(out)], check=True, capture_output=True, text=True)
    return time.perf_counter() - started, float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="trtbuild-bench-"))
    try:
        shutil.copytree(REPO / "recipes", work / "recipes")
        results = {"plain": [], "plain_inside": [], "j1": [], "j2": []}
        steps: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            wall, inside = plain(work)
            results["plain"].append(wall)
            results["plain_inside"].append(inside)
            wall, run_steps = trtbuild_cold(work, 1)
            results["j1"].append(wall)
            for name, seconds in run_steps.items():
                steps.setdefault(name, []).append(seconds)
            results["j2"].append(trtbuild_cold(work, 2)[0])
        base = statistics.median(results["plain"])
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, repeat {args.repeat} (medians)")
        medians = {name: statistics.median(seconds) for name, seconds in steps.items()}
        print("per step (trtbuild -j 1, medians): " + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items())
              + f"; sum {sum(medians.values()):.2f} s")
        print(f"plain script, one process:  {base:.2f} s  (its own timer, without interpreter teardown: "
              f"{statistics.median(results['plain_inside']):.2f} s)")
        for key in ("j1", "j2"):
            t = statistics.median(results[key])
            print(f"trtbuild -j {key[1]}:              {t:.2f} s  ({(t - base) / base * 100:+.1f}% vs plain)")
        print("all runs: " + json.dumps({k: [round(v, 2) for v in vs] for k, vs in results.items()}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
