"""No-op build wall time for 1 recipe and for N recipes, and which modules a no-op build imports.

    python bench/noop.py [--recipes 200 1000] [--repeat 9] [--source DIR] [--against DIR_OR_COMMIT]

Builds the example once (real TensorRT-RTX), writes N recipes for the same model with distinct
names into a temp dir, builds them once, then times `trtbuild` as a fresh process per run with
everything cached. The runs alternate between the sizes, round after round, so the machine's drift
hits them alike. --source DIR times the trtbuild package in DIR (another checkout); --against DIR times
another checkout in the same rounds, alternately (before / after a change, under the same load); a
commit instead of a folder (--against ec071ed) times that commit's trtbuild, taken with `git archive`.
Each checkout keeps its own cache (its code is in its keys).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, checkout, compile_bytecode

HEAVY = ("torch", "tensorflow", "tensorrt", "tensorrt_rtx", "onnxruntime", "onnx")
# What a no-op build of recipes validated before, on the same GPUs, no longer needs.
SKIPPED = ("pydantic", "yaml", "pynvml", "importlib.metadata", "filelock")


def build(target: Path, cache: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one trtbuild process: CPU time, user and system, says more than
    wall time on a machine others load."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # From the bench's own folder: `python -m` puts the working directory first on sys.path, and a
    # checkout there would be timed instead of the one PYTHONPATH names.
    subprocess.run([sys.executable, "-m", "trtbuild", str(target), "--cache-dir", str(cache), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cache.parent)
    wall = time.perf_counter() - started
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime


def imported(target: Path, cache: Path, env: dict, modules: tuple[str, ...]) -> list[str]:
    script = (
        "import sys; from trtbuild.commands.cli import main\n"
        f"assert main([{str(target)!r}, '--cache-dir', {str(cache)!r}, '--quiet']) == 0\n"
        f"print(__import__('json').dumps(sorted(m for m in {modules!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env,
                         cwd=cache.parent).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", type=int, nargs="+", default=[200, 1000], metavar="N")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--source", type=Path, help="a directory holding the trtbuild package to time")
    parser.add_argument("--against", help="another checkout (a folder) or a commit of this repository to time in "
                        "the same rounds, alternately (before / after a change, under the same load)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trtbuild-bench-"))
    shown = {"this": args.source or REPO, "against": args.against}
    if args.against:
        args.against = checkout(args.against, work / "against")
    sources = {"this": args.source} | ({"against": args.against} if args.against else {})
    envs = {}
    for label, source in sources.items():
        env = dict(os.environ)
        env["PYTHONPATH"] = str((source or REPO).resolve())
        if source:
            compileall.compile_dir(source / "trtbuild", quiet=1)
        else:
            compile_bytecode()
        envs[label] = env

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
        caches = {label: work / f"cache-{label}" for label in sources}
        cold = {label: build(targets[1], caches[label], envs[label]) for label in sources}
        for label in sources:
            for target in targets.values():
                build(target, caches[label], envs[label])  # the first build of each set records what no-ops read
        time.sleep(2.5)  # files written seconds ago are not trusted by their stat (racy): let them settle,
        for label in sources:  # and let one no-op of each set fill its build log, as the second CI run would
            for target in targets.values():
                build(target, caches[label], envs[label])
        runs = [(label, n) for label in sources for n in targets]
        times: dict[tuple, list[tuple[float, float]]] = {run: [] for run in runs}
        for round_ in range(args.repeat):
            for label, n in (runs if round_ % 2 == 0 else runs[::-1]):
                times[(label, n)].append(build(targets[n], caches[label], envs[label]))
        for label, source in sources.items():
            print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, trtbuild from {shown[label]}, "
                  f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print(f"cold build, 1 recipe (check + simplify + TensorRT-RTX engine): {cold[label][0]:.2f} s")
            for n in targets:
                runs_n = [wall for wall, _ in times[(label, n)]]
                cpu = [cpu for _, cpu in times[(label, n)]]
                print(f"no-op build, {n:>4} recipe{'s' if n > 1 else ' '}: median {statistics.median(runs_n):.3f} s  "
                      f"(min {min(runs_n):.3f}, max {max(runs_n):.3f}, {len(runs_n)} runs); CPU median "
                      f"{statistics.median(cpu):.3f} s (min {min(cpu):.3f})")
            biggest = targets[max(targets)]
            print(f"heavy modules imported by a no-op build: "
                  f"{imported(biggest, caches[label], envs[label], HEAVY) or 'none'}")
            print(f"of {', '.join(SKIPPED)}, a no-op build imports: "
                  f"{imported(biggest, caches[label], envs[label], SKIPPED) or 'none'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
