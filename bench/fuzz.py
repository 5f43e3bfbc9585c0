"""The fuzz of tests/test_fuzz.py, with its figures: cases, exit codes, slowest case and peak memory per kind,
defects (tracebacks, hangs, crashes, wrong exit codes) and files written outside the cache.

    python bench/fuzz.py [--source DIR]

--source DIR runs the trtbuild package in DIR (another checkout: before / after); the cases are this
checkout's (tests/hostile.py, fixed seed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import REPO

sys.path.insert(0, str(REPO / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO, help="a directory holding the trtbuild package to run")
    args = parser.parse_args()
    from test_fuzz import defects, figures, run_fuzz

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        results, outside = run_fuzz(Path(tmp), args.source.resolve())
        wall = time.perf_counter() - started
    print(f"trtbuild from {args.source}; {len(results)} cases in {wall:.0f} s")
    print("| kind | cases | exit codes | slowest case | total | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, f in figures(results).items():
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(f["exit"].items()))
        print(f"| {kind} | {f['cases']} | {codes} | {f['max_s']:.2f} s | {f['total_s']:.1f} s | {f['max_rss_mb']} MB |")
    found = defects(results)
    print(f"defects: {len(found)}; files written outside the cache: {len(outside)}")
    for line in found:
        print("  " + line.splitlines()[0][:200])
    for path in outside[:10]:
        print("  outside: " + path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
