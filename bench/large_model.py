"""A model over protobuf's 2 GB limit, end to end: check, simplify and a TensorRT-RTX engine.

    python bench/large_model.py [--size N] [--source DIR]

Writes a MatMul with an N x N float32 weight (default 23200: 2.15 GB) as an ONNX file plus external
data, streamed to disk so no 2 GB message is ever built here, then builds it cold and again (no-op).
Prints each step's wall time and peak resident memory (from its log), the largest process's peak,
and how much the cache grew (bytes of every file in it, out/ included) against the model's size. On
Linux it also samples every process of the cold build every 10 ms and prints the largest sample split
into RssAnon (the process's own memory) and RssFile (pages of mapped files: libraries, the model's data).
--source DIR builds with the trtbuild package in DIR (another checkout, for before / after).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from common import REPO, compile_bytecode

RECIPE = """\
name: large
source: {{framework: onnx, path: large.onnx}}
inputs:
  x: {{shape: [-1, {size}], min: [1, {size}], opt: [2, {size}], max: [4, {size}]}}
engine: {{backend: tensorrt-rtx, workspace: 1GiB, optimization_level: 0}}
"""


def write_model(work: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    with open(work / "large.onnx.data", "wb") as data:
        for start in range(0, size, 1000):  # in slices: the whole weight never sits in memory
            rows = min(1000, size - start)
            data.write((rng.standard_normal((rows, size), dtype=np.float32) * 0.01).tobytes())
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[size, size], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "large.onnx.data"), ("offset", "0"), ("length", str(size * size * 4))):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", size])], [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), work / "large.onnx")
    (work / "large.yaml").write_text(RECIPE.format(size=size))


def build(work: Path, env: dict, sample: dict | None = None) -> tuple[float, dict]:
    """Run trtbuild on the recipe from the work folder (so `-m` finds trtbuild through PYTHONPATH, not the
    caller's folder); `sample`: filled with the largest RssAnon + RssFile sample of its processes."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "trtbuild", str(work / "large.yaml"), "--cache-dir",
                             str(work / "cache"), "--report", str(work / "report.json"), "--quiet"], cwd=work, env=env)
    sampler = threading.Thread(target=_sample, args=(proc, sample), daemon=True) if sample is not None else None
    if sampler:
        sampler.start()
    if proc.wait():
        raise SystemExit(f"trtbuild failed (exit {proc.returncode})")
    wall = time.perf_counter() - started
    if sampler:
        sampler.join()
    steps = {}
    for s in json.loads((work / "report.json").read_text())["steps"]:
        steps[s["step"]] = (s["status"], s["seconds"], _peak_of(s.get("log")))
    return wall, steps


def _peak_of(log: str | None) -> int:
    """The step's peak resident memory in bytes, as its worker wrote it at the end of its log (0: none)."""
    try:
        found = re.findall(r"peak resident memory of this step: (\d+) MiB", Path(log).read_text(errors="replace"))
    except (OSError, TypeError):
        return 0
    return int(found[-1]) << 20 if found else 0


def _sample(proc: subprocess.Popen, largest: dict) -> None:
    """Every 10 ms, RssAnon and RssFile of `proc` and its descendants (from /proc); keep the largest sum."""
    while proc.poll() is None:
        for pid in _tree(proc.pid):
            try:
                fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
                anon, file = (int(fields[k].split()[0]) << 10 for k in ("RssAnon", "RssFile"))
            except (OSError, KeyError, ValueError):
                continue
            if anon + file > largest.get("anon", 0) + largest.get("file", 0):
                largest.update(anon=anon, file=file)
        time.sleep(0.01)


def _tree(root: int) -> list[int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += [child for child, parent in parents.items() if parent == pid]
    return found


def _bytes_under(folder: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(folder) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=23200, help="rows and columns of the weight (default 23200)")
    parser.add_argument("--source", type=Path, help="a directory holding the trtbuild package to build with")
    args = parser.parse_args()
    size = args.size
    compile_bytecode()
    if args.source:
        compileall.compile_dir(args.source / "trtbuild", quiet=1)
    env = os.environ | {"PYTHONPATH": str((args.source or REPO).resolve())}
    work = Path(tempfile.mkdtemp(prefix="trtbuild-bench-"))
    try:
        write_model(work, size)
        model = (work / "large.onnx").stat().st_size + (work / "large.onnx.data").stat().st_size
        print(f"model: {model / 2**30:.2f} GiB ({model} bytes)")
        sample: dict | None = {} if os.path.exists("/proc/self/status") else None
        cold, steps = build(work, env, sample)
        # Workers restart their peak at each step (trtbuild's logs say each one's), so the largest of those
        # and of what the kernel kept for the processes that exited is the largest process's peak.
        peak = max([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024] + [p for *_, p in steps.values()])
        grown = _bytes_under(work / "cache")
        print(f"cold build: {cold:.1f} s; " + ", ".join(f"{k} {s} {t:.1f} s" + (f", peak {p / 2**30:.2f} GiB" if p else "")
                                                        for k, (s, t, p) in steps.items()))
        print(f"largest process: {peak / 2**30:.2f} GiB ({peak / model:.2f}x the model)")
        if sample:
            print(f"largest sample (every 10 ms): RssAnon {sample['anon'] / 2**30:.2f} GiB + RssFile "
                  f"{sample['file'] / 2**30:.2f} GiB")
        print(f"cache grew by {grown / 2**30:.2f} GiB ({grown / model:.2f}x the model)")
        again, steps = build(work, env)
        print(f"no-op build: {again:.2f} s; " + ", ".join(f"{k} {s}" for k, (s, *_) in steps.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
