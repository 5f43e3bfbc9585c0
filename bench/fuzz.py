"""The fuzz of tests/test_fuzz.py, with its figures: cases, exit codes, slowest case and peak memory per kind,
defects (tracebacks, hangs, crashes, wrong exit codes) and files written outside the cache; then the
hostile cache files of tests/test_fuzz_cache.py and the command lines of tests/test_fuzz_cli.py (hangs,
tracebacks, exit codes).

    python bench/fuzz.py [--source DIR]

--source DIR runs the trtbuild package in DIR (another checkout: before / after); the cases are this
checkout's (tests/hostile.py, fixed seed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
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
    if args.source.resolve() == REPO:  # these two run the package of this checkout
        from test_fuzz_cache import run_cases
        from test_fuzz_cli import run_lines

        for what, run in (("hostile cache files", run_cases), ("hostile command lines", run_lines)):
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                outcomes = Counter(r["outcome"] for r in run(Path(tmp)))
            print(f"{what}: {sum(outcomes.values())} cases in {time.perf_counter() - started:.0f} s: "
                  + ", ".join(f"{o}: {n}" for o, n in sorted(outcomes.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
