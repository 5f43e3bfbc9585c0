"""No-op build wall time for 1 and for N recipes, and which heavy modules a no-op build imports.

    python bench/noop.py [--recipes 200] [--repeat 5]

Builds the example once (real TensorRT-RTX), writes N recipes for the same model with distinct
names into a temp dir, builds them once, then times `trtbuild DIR` as a fresh process per run.
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

HEAVY = ("torch", "tensorflow", "tensorrt", "tensorrt_rtx", "onnxruntime", "onnx")


def build(target: Path, cache: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trtbuild", str(target), "--cache-dir", str(cache), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def imported_heavy(target: Path, cache: Path) -> list[str]:
    script = (
        "import sys; from trtbuild.cli import main\n"
        f"assert main([{str(target)!r}, '--cache-dir', {str(cache)!r}, '--quiet']) == 0\n"
        f"print(__import__('json').dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    compile_bytecode()

    work = Path(tempfile.mkdtemp(prefix="trtbuild-bench-"))
    try:
        shutil.copytree(REPO / "recipes", work / "one")
        hour_ago = time.time() - 3600  # a model edited seconds ago is re-hashed on purpose (racy stat)
        os.utime(work / "one" / "models" / "resnet_block.onnx", (hour_ago, hour_ago))
        many = work / "many"
        many.mkdir()
        text = (work / "one" / "resnet_block.yaml").read_text().replace("models/", "../one/models/")
        for i in range(args.recipes):
            (many / f"r{i:03d}.yaml").write_text(text.replace("name: resnet_block", f"name: r{i:03d}"))
        cache = work / "cache"
        cold = build(work / "one" / "resnet_block.yaml", cache)
        build(many, cache)
        one = [build(work / "one" / "resnet_block.yaml", cache) for _ in range(args.repeat)]
        lots = [build(many, cache) for _ in range(args.repeat)]
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
        print(f"cold build, 1 recipe (check + simplify + TensorRT-RTX engine): {cold:.2f} s")
        print(f"no-op build, 1 recipe:   median {statistics.median(one):.3f} s  (min {min(one):.3f}, max {max(one):.3f})")
        print(f"no-op build, {args.recipes} recipes: median {statistics.median(lots):.3f} s  (min {min(lots):.3f}, max {max(lots):.3f})")
        print(f"heavy modules imported by a no-op build: {imported_heavy(many, cache) or 'none'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
