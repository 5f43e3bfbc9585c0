"""The build farm against local workers, on the same recipes: wall time, and per-step scheduling
overhead (the driver's time for a step minus the time the step itself took on its node: Ray
submission and placement, input and output transfer through the remote cache, digest checks).

    python bench/farm.py [--recipes 8] [--repeat 3]

The farm is a real Ray cluster on this host: a head that runs no steps and two worker nodes of
one CPU each, a file:// remote. Local runs use -j 2. Each repeat is a cold build (fresh caches and
remote) of N recipes of a Conv-BatchNorm-Relu model (check, simplify, TensorRT-RTX engine).
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

sys.path.insert(0, str(REPO / "tests"))


def write_recipes(folder: Path, count: int) -> None:
    import onnx
    import yaml
    from conftest import conv_model, recipe_dict

    folder.mkdir(parents=True)
    for i in range(count):
        onnx.save(conv_model(seed=i, channels=32), folder / f"m{i}.onnx")
        data = recipe_dict(f"m{i}.onnx")
        data["name"] = f"m{i}"
        (folder / f"m{i}.yaml").write_text(yaml.safe_dump(data))


def build(folder: Path, work: Path, *args: str) -> tuple[float, dict]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    report = work / "report.json"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trtbuild", str(folder), "--cache-dir", str(work / "cache"), "--quiet",
                    "--report", str(report), *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=os.environ | {"CUDA_VISIBLE_DEVICES": ""})
    return time.perf_counter() - started, json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    compile_bytecode()
    from ray.cluster_utils import Cluster

    from trtbuild.execution.farm import this_node

    root = Path(tempfile.mkdtemp(prefix="trtbuild-farm-bench-"))
    write_recipes(root / "recipes", args.recipes)
    small = {"object_store_memory": 80 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **small})
    for _ in range(2):
        cluster.add_node(num_cpus=1, resources=this_node(), **small)
    cluster.wait_for_nodes()
    local, farm, overheads, noop_local, noop_farm = [], [], [], [], []
    try:
        for _ in range(args.repeat):
            seconds, _ = build(root / "recipes", root / "local", "-j", "2")
            local.append(seconds)
            noop_local.append(build_noop(root / "recipes", root / "local"))
            shutil.rmtree(root / "remote", ignore_errors=True)
            farm_args = ("--executor", "ray", "--ray-address", cluster.address, "--remote", (root / "remote").as_uri())
            seconds, report = build(root / "recipes", root / "farm", *farm_args)
            farm.append(seconds)
            noop_farm.append(build_noop(root / "recipes", root / "farm", *farm_args))
            overheads += [s["seconds"] - s["node"]["seconds"] for s in report["steps"] if s["status"] == "built"]
    finally:
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    steps = len(overheads) // args.repeat
    print(f"{args.recipes} recipes, {steps} steps built per cold build; medians of {args.repeat}")
    print(f"cold build, local workers -j 2:          {statistics.median(local):.2f} s")
    print(f"cold build, Ray farm (2 nodes x 1 CPU): {statistics.median(farm):.2f} s")
    print(f"no-op build, local / farm:               {statistics.median(noop_local):.2f} s / "
          f"{statistics.median(noop_farm):.2f} s")
    print(f"per-step overhead on the farm: median {statistics.median(overheads) * 1000:.0f} ms, "
          f"mean {statistics.mean(overheads) * 1000:.0f} ms, max {max(overheads) * 1000:.0f} ms "
          f"({len(overheads)} steps)")


def build_noop(folder: Path, work: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trtbuild", str(folder), "--cache-dir", str(work / "cache"), "--quiet",
                    *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=os.environ | {"CUDA_VISIBLE_DEVICES": ""})
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
