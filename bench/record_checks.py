"""What checking every file read back costs a no-op build: the time spent in the checks (action records,
state files, stat-cache entries and facts, validated-recipe records) against the whole no-op build.

    python bench/record_checks.py [--recipes 200] [--repeat 7]

Builds the example recipe once (real TensorRT-RTX), writes N recipes with distinct names for the same
model, builds them once, then runs no-op builds in this process with each check wrapped in a timer.
Both numbers come from the same runs, so the machine's load hits them alike.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import REPO

spent = [0.0]


def timed(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from trtbuild.commands.cli import main as trtbuild
    from trtbuild.recipes import records
    from trtbuild.store import cache, hashing

    work = Path(tempfile.mkdtemp(prefix="trtbuild-bench-"))
    try:
        shutil.copytree(REPO / "recipes", work / "one")
        hour_ago = time.time() - 3600
        os.utime(work / "one" / "models" / "resnet_block.onnx", (hour_ago, hour_ago))
        text = (work / "one" / "resnet_block.yaml").read_text().replace("models/", "../one/models/")
        many = work / "many"
        many.mkdir()
        for i in range(args.recipes):
            (many / f"r{i:04d}.yaml").write_text(text.replace("name: resnet_block", f"name: r{i:04d}"))
        store = work / "cache"
        quiet = ["--cache-dir", str(store), "--quiet"]
        assert trtbuild([str(many), *quiet]) == 0
        for module, names in ((cache, ("record_problem", "state_entries")), (hashing, ("fact_ok", "stat_entry_ok")),
                              (records, ("_check",))):
            for name in names:
                setattr(module, name, timed(getattr(module, name)))
        walls, checks = [], []
        for _ in range(args.repeat):
            spent[0] = 0.0
            started = time.perf_counter()
            assert trtbuild([str(many), *quiet]) == 0
            walls.append(time.perf_counter() - started)
            checks.append(spent[0])
        wall, check = statistics.median(walls), statistics.median(checks)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; no-op build of {args.recipes} recipes "
              f"({4 * args.recipes} steps), in process, {args.repeat} runs")
        print(f"no-op build: median {wall:.3f} s; in the checks: median {check * 1000:.1f} ms "
              f"({100 * check / wall:.1f}% of the build)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
