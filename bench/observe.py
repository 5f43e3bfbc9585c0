"""What observing every read costs: the export step of ResNet-50 with its system calls watched
(trtbuild.store.watcher) against Python's audit hook alone (TRTBUILD_OBSERVE=python), alternately from
an empty cache; and the no-op build of one PyTorch recipe in a plain venv against a venv whose packages
come through a `.pth` file (installed distributions outside the interpreter's folders), with the
number of files each export record lists.

    python bench/observe.py [--repeat 3] [--only export|noop] [--source DIR]   (DIR: another checkout's trtbuild)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from common import REPO, compile_bytecode

NET = '''
import torch
import torchvision


def build():
    torch.manual_seed(0)
    return torchvision.models.resnet50()
'''


def project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.py").write_text(NET)
    recipe = {"name": "resnet50", "source": {"framework": "pytorch", "entrypoint": "net:build"},
              "inputs": {"x": {"shape": [-1, 3, 224, 224], "min": [1, 3, 224, 224], "opt": [8, 3, 224, 224],
                               "max": [32, 3, 224, 224]}},
              "onnx": {"opset": 17}, "parity": {"enabled": False},
              "engine": {"backend": "tensorrt-rtx", "optimization_level": 0}}
    (folder / "net.yaml").write_text(json.dumps(recipe))
    return folder / "net.yaml"


def build(python: str, recipe: Path, cache: Path, env: dict) -> tuple[float, dict]:
    report = cache.parent / "report.json"
    started = time.perf_counter()
    subprocess.run([python, "-m", "trtbuild", str(recipe), "--cache-dir", str(cache), "--quiet", "--report",
                    str(report)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   cwd=cache.parent)
    wall = time.perf_counter() - started
    return wall, {s["step"]: s for s in json.loads(report.read_text())["steps"]}


def export_files(cache: Path, steps: dict) -> tuple[int, str]:
    """How many files the export record lists, and how its reads were observed (`reads_observed`)."""
    record = json.loads(next((cache / "actions").glob(f"*/{steps['export']['key']}.json")).read_text())
    return len(record.get("discovered", {}).get("files", {})), record.get("meta", {}).get("reads_observed", "?")


def export_overhead(work: Path, repeat: int) -> None:
    recipe = project(work / "resnet")
    times: dict[str, list[float]] = {"system calls": [], "python": []}
    for _ in range(repeat):
        for mode in times:
            cache = work / "resnet" / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            env = os.environ | ({"TRTBUILD_OBSERVE": "python"} if mode == "python" else {})
            _, steps = build(sys.executable, recipe, cache, env)
            times[mode].append(steps["export"]["seconds"])
    for mode, found in times.items():
        print(f"export step, reads observed by {mode:12}: median {statistics.median(found):.2f} s  {found}")


def pth_venv(folder: Path) -> str:
    """A venv with no packages of its own: a .pth file names this interpreter's site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next(folder.glob("lib/python*/site-packages"))
    (site / "elsewhere.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return str(folder / "bin" / "python")


def noop(work: Path, repeat: int, source: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(source)}
    setups = {"plain venv": sys.executable, "packages via .pth": pth_venv(work / "pth-venv")}
    recipes = {name: project(work / name.replace(" ", "-")) for name in setups}
    counts = {}
    for name, python in setups.items():
        cache = recipes[name].parent / "cache"
        _, steps = build(python, recipes[name], cache, env)
        counts[name], observed = export_files(cache, steps)
        print(f"{name}: {python}; the export's reads observed by: {observed}")
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(repeat):
        for name, python in setups.items():
            times[name].append(build(python, recipes[name], recipes[name].parent / "cache", env)[0])
    for name, found in times.items():
        print(f"no-op, {name:18}: median {statistics.median(found):.3f} s, export record lists {counts[name]} files"
              f"  {[round(t, 3) for t in found]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("export", "noop"))
    parser.add_argument("--source", type=Path, default=REPO, help="the checkout whose trtbuild the no-op runs")
    args = parser.parse_args()
    compile_bytecode()
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "export"):
            export_overhead(Path(tmp), args.repeat)
        if args.only in (None, "noop"):
            noop(Path(tmp), max(args.repeat, 5), args.source)


if __name__ == "__main__":
    main()
