"""No-op build wall time for 1 recipe and for N recipes, and which modules a no-op build imports.

    python bench/noop.py [--recipes 200 1000] [--repeat 9] [--source DIR]

Builds the example once (real TensorRT-RTX), writes N recipes for the same model with distinct
names into a temp dir, builds them once, then times `trtbuild` as a fresh process per run with
everything cached. The runs alternate between the sizes, round after round, so the machine's drift
hits them alike. --source DIR times the trtbuild package in DIR (another checkout: before / after).
"""

from __future__ import annotations

import argparse
import compileall
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

HEAVY = ("torch", "tensorflow", "tensorrt", "tensorrt_rtx", "onnxruntime", "onnx")
# What a no-op build of recipes validated before, on the same GPUs, no longer needs.
SKIPPED = ("pydantic", "yaml", "pynvml")


def build(target: Path, cache: Path, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trtbuild", str(target), "--cache-dir", str(cache), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def imported(target: Path, cache: Path, env: dict, modules: tuple[str, ...]) -> list[str]:
    script = (
        "import sys; from trtbuild.commands.cli import main\n"
        f"assert main([{str(target)!r}, '--cache-dir', {str(cache)!r}, '--quiet']) == 0\n"
        f"print(__import__('json').dumps(sorted(m for m in {modules!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", type=int, nargs="+", default=[200, 1000], metavar="N")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--source", type=Path, help="a directory holding the trtbuild package to time")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.source:
        env["PYTHONPATH"] = str(args.source.resolve())
        compileall.compile_dir(args.source / "trtbuild", quiet=1)
    else:
        compile_bytecode()

    work = Path(tempfile.mkdtemp(prefix="trtbuild-bench-"))
    try:
        shutil.copytree(REPO / "recipes", work / "one")
        hour_ago = time.time() - 3600  # a model edited seconds ago is re-hashed on purpose (racy stat)
        os.utime(work / "one" / "models" / "resnet_block.onnx", (hour_ago, hour_ago))
        text = (work / "one" / "resnet_block.yaml").read_text().replace("models/", "../one/models/")
        targets = {1: work / "one" / "resnet_block.yaml"}
        for n in args.recipes:
            many = targets[n] = work / f"many{n}"
            many.mkdir()
            for i in range(n):
                (many / f"r{i:04d}.yaml").write_text(text.replace("name: resnet_block", f"name: r{i:04d}"))
        cache = work / "cache"
        cold = build(targets[1], cache, env)
        for target in targets.values():
            build(target, cache, env)  # the first build of each set records what the no-op runs read
        times: dict[int, list[float]] = {n: [] for n in targets}
        for round_ in range(args.repeat):
            for n in (list(targets) if round_ % 2 == 0 else list(targets)[::-1]):
                times[n].append(build(targets[n], cache, env))
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, trtbuild from {args.source or REPO}")
        print(f"cold build, 1 recipe (check + simplify + TensorRT-RTX engine): {cold:.2f} s")
        for n, runs in times.items():
            print(f"no-op build, {n:>4} recipe{'s' if n > 1 else ' '}: median {statistics.median(runs):.3f} s  "
                  f"(min {min(runs):.3f}, max {max(runs):.3f}, {len(runs)} runs)")
        biggest = targets[max(targets)]
        print(f"heavy modules imported by a no-op build: {imported(biggest, cache, env, HEAVY) or 'none'}")
        print(f"of {', '.join(SKIPPED)}, a no-op build imports: {imported(biggest, cache, env, SKIPPED) or 'none'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
