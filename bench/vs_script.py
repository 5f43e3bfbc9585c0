"""Cold builds against the hand-written scripts they replace: whole processes, run alternately.

ResNet-50: bench/tutorial/export.py, simplify.py and build.py (the calls a tutorial makes, each
its own process) against trtbuild on the same settings (torchvision ResNet-50, random weights,
dynamic batch 1 / 8 / 32, onnx-simplifier, TensorRT-RTX with a 1 GiB workspace, parity off) from an
empty cache, at opset 17 (the script exports with TorchScript) and at the default opset (the script
calls torch.onnx.export with its defaults); trtbuild uses its default exporter, which picks one. trtbuild also checks the simplified model on ONNX Runtime; the script
does not.

Eight engines: one small ONNX model at eight opt shapes (simplify off): a shell loop of
`polygraphy convert` against trtbuild at -j 1 and -j 2, from an empty cache.

    python bench/vs_script.py [--repeat 5] [--only resnet50|engines] [--opset 17|default] [--against DIR_OR_COMMIT]

--against times another checkout's trtbuild (a folder holding the package, or a commit of this repository,
taken with `git archive`) beside this one, in the same rounds: before / after on the same load.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import REPO, checkout, compile_bytecode

TUTORIAL = REPO / "bench" / "tutorial"
SMALL_SHAPE = [3, 16, 16]


def timed(command: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of a command and every process under it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def resnet50_scripts(work: Path, opset: int | None) -> tuple[float, float]:
    wall = cpu = 0.0
    for script, args in (("export.py", ["r.onnx", *(["--opset", str(opset)] if opset else [])]), ("simplify.py", ["r.onnx", "r-sim.onnx"]),
                         ("build.py", ["r-sim.onnx", "r.plan"])):
        w, c = timed([sys.executable, str(TUTORIAL / script), *args], work)
        wall, cpu = wall + w, cpu + c
    return wall, cpu


def resnet50_recipe(work: Path, opset: int | None) -> Path:
    """trtbuild's default exporter (auto): it picks the exporter from the recipe's opset."""
    recipe = {
        "name": "resnet50",
        "source": {"framework": "pytorch", "entrypoint": "torchvision.models:resnet50", "kwargs": {"weights": None},
                   "outputs": ["logits"]},
        "inputs": {"input": {"dtype": "float32", "shape": [-1, 3, 224, 224], "min": [1, 3, 224, 224],
                             "opt": [8, 3, 224, 224], "max": [32, 3, 224, 224]}},
        "onnx": {"opset": opset} if opset else {},
        "parity": {"enabled": False},
        "engine": {"backend": "tensorrt-rtx", "workspace": "1GiB"},
    }
    path = work / f"resnet50-{opset or 'default'}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def small_model(work: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    import onnx
    from conftest import conv_model

    path = work / "small.onnx"
    onnx.save(conv_model(), path)
    return path


def engine_recipes(work: Path, model: Path) -> Path:
    folder = work / "recipes"
    folder.mkdir(exist_ok=True)
    for batch in range(1, 9):
        recipe = {"name": f"small_opt{batch}", "source": {"framework": "onnx", "path": str(model)},
                  "inputs": {"x": {"shape": [-1, *SMALL_SHAPE], "min": [1, *SMALL_SHAPE], "opt": [batch, *SMALL_SHAPE],
                                   "max": [8, *SMALL_SHAPE]}},
                  "onnx": {"simplify": False}, "engine": {"backend": "tensorrt-rtx"}}
        (folder / f"opt{batch}.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return folder


def polygraphy_loop(work: Path, model: Path) -> tuple[float, float]:
    shape = ",".join(str(d) for d in SMALL_SHAPE)
    loop = (f"for b in 1 2 3 4 5 6 7 8; do polygraphy convert {model} -o e$b.plan "
            f"--trt-min-shapes x:[1,{shape}] --trt-opt-shapes x:[$b,{shape}] --trt-max-shapes x:[8,{shape}] "
            "|| exit 1; done")
    return timed(["bash", "-c", loop], work, os.environ | {"POLYGRAPHY_USE_TENSORRT_RTX": "1"})


def trtbuild(work: Path, target: Path, *args: str, source: Path = REPO) -> tuple[float, float]:
    """trtbuild from `source` (a folder holding the package) on `target`, from an empty cache."""
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = os.environ | {"PYTHONPATH": str(source.resolve())}
    return timed([sys.executable, "-m", "trtbuild", str(target), "--cache-dir", str(cache), "-q", *args], work, env)


def compare(cases: dict, repeat: int) -> dict[str, list[tuple[float, float]]]:
    """Each case `repeat` times, in an order that rotates every round (no case always runs first)."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(repeat):
        for name in names[i % len(names):] + names[:i % len(names)]:
            runs[name].append(cases[name]())
            print(f"  round {i + 1}: {name}: {runs[name][-1][0]:.2f} s wall, {runs[name][-1][1]:.2f} s CPU", flush=True)
    return runs


def table(runs: dict, baseline: str) -> str:
    base_wall = statistics.median(w for w, _ in runs[baseline])
    base_cpu = statistics.median(c for _, c in runs[baseline])
    lines = ["| case | wall (median) | CPU (median) | wall / baseline | CPU / baseline | wall min - max |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, values in runs.items():
        wall, cpu = statistics.median(w for w, _ in values), statistics.median(c for _, c in values)
        walls = [w for w, _ in values]
        lines.append(f"| {name} | {wall:.2f} s | {cpu:.2f} s | {wall / base_wall:.2f} | {cpu / base_cpu:.2f} | "
                     f"{min(walls):.2f} - {max(walls):.2f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["resnet50", "engines"])
    parser.add_argument("--opset", choices=["17", "default"], help="ResNet-50 at this opset only")
    parser.add_argument("--against", help="another checkout (a folder) or a commit of this repository to time "
                        "beside this one, eight engines only")
    args = parser.parse_args()
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="trtbuild-vs-script-"))
    against = checkout(args.against, work / "against") if args.against else None
    if against:
        compileall.compile_dir(against / "trtbuild", quiet=1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    print(f"trtbuild {commit.strip()}, python {sys.version.split()[0]}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    try:
        if args.only in (None, "resnet50"):
            for opset in {"17": [17], "default": [None]}.get(args.opset, [17, None]):
                recipe = resnet50_recipe(work, opset)
                runs = compare({"three scripts": lambda: resnet50_scripts(work, opset),
                                "trtbuild": lambda: trtbuild(work, recipe)}, args.repeat)
                print(f"\nResNet-50, opset {opset or 'default'}, cold:\n" + table(runs, "three scripts"))
        if args.only in (None, "engines"):
            model = small_model(work)
            recipes = engine_recipes(work, model)
            cases = {"polygraphy convert loop": lambda: polygraphy_loop(work, model),
                     "trtbuild -j 1": lambda: trtbuild(work, recipes, "-j", "1"),
                     "trtbuild -j 2": lambda: trtbuild(work, recipes, "-j", "2")}
            if against:
                cases |= {f"{args.against} -j 1": lambda: trtbuild(work, recipes, "-j", "1", source=against),
                          f"{args.against} -j 2": lambda: trtbuild(work, recipes, "-j", "2", source=against)}
            runs = compare(cases, args.repeat)
            print("\nEight engines of one small model, cold:\n" + table(runs, "polygraphy convert loop"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
