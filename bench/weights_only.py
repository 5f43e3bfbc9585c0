"""Weights-only rebuild vs a full cold build: a tiny BERT (from_pretrained of a saved checkpoint) and
ResNet-50 (torchvision, `checkpoint:` a state_dict). Each round: a cold build in a fresh cache, then new
weights (a retrained checkpoint: every tensor perturbed) and the rebuild. The export step's time and the
whole build's wall time, medians over the rounds. With --baseline DIR (another checkout of trtbuild, e.g.
`git archive <commit> | tar -x -C DIR`), each round runs that checkout too, right after this one, so both
see the same load; the ratios are what to compare.

    python bench/weights_only.py [--repeat 3] [--models bert resnet50] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, compile_bytecode

ENGINE = {"backend": "tensorrt-rtx", "optimization_level": 0}
BERT_SAVE = """
import sys, torch
from transformers import BertConfig, BertModel
torch.manual_seed(int(sys.argv[1]))
model = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=64))
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.05)
model.save_pretrained(sys.argv[2])
"""
RESNET_SAVE = """
import sys, torch, torchvision
torch.manual_seed(int(sys.argv[1]))
state = torchvision.models.resnet50().state_dict()
with torch.no_grad():
    for t in state.values():
        if t.is_floating_point():
            t.add_(torch.rand_like(t) * 0.01)
torch.save(state, sys.argv[2])
"""


def bert(folder: Path) -> tuple[dict, list[str]]:
    (folder / "net.py").write_text("from pathlib import Path\nfrom transformers import BertModel\n\n\n"
                                   "def build():\n    return BertModel.from_pretrained(Path(__file__).with_name('ckpt'))\n")
    dims = {"dtype": "int64", "shape": [-1, 16], "min": [1, 16], "opt": [2, 16], "max": [4, 16]}
    recipe = {"name": "bert", "source": {"framework": "pytorch", "entrypoint": "net:build",
                                         "outputs": ["last_hidden_state", "pooler_output"]},
              "inputs": {"input_ids": dims, "attention_mask": dims}, "engine": ENGINE}
    return recipe, ["-c", BERT_SAVE, "{seed}", str(folder / "ckpt")]


def resnet50(folder: Path) -> tuple[dict, list[str]]:
    recipe = {"name": "resnet50", "source": {"framework": "pytorch", "entrypoint": "torchvision.models:resnet50",
                                             "checkpoint": "resnet50.pt"},
              "inputs": {"x": {"shape": [-1, 3, 224, 224], "min": [1, 3, 224, 224], "opt": [1, 3, 224, 224],
                               "max": [8, 3, 224, 224]}},
              "engine": ENGINE}
    return recipe, ["-c", RESNET_SAVE, "{seed}", str(folder / "resnet50.pt")]


MODELS = {"bert": bert, "resnet50": resnet50}


def build(recipe: Path, cache: Path, repo: Path = REPO) -> tuple[float, dict]:
    report = recipe.parent / "report.json"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trtbuild", str(recipe), "--cache-dir", str(cache), "--report",
                           str(report)], capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(repo)},
                          cwd=recipe.parent)  # not the current folder: `-m` would import trtbuild from there first
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(done.stderr)
    return wall, {s["step"]: s for s in json.loads(report.read_text())["steps"]}


def round_of(name: str, seed: int, repo: Path = REPO) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"weights-{name}-"))
    try:
        recipe, save = MODELS[name](folder)
        (folder / "net.yaml").write_text(json.dumps(recipe))
        subprocess.run([sys.executable, *(a.format(seed=seed) for a in save)], check=True, capture_output=True)
        cold, first = build(folder / "net.yaml", folder / "cache", repo)
        subprocess.run([sys.executable, *(a.format(seed=seed + 1) for a in save)], check=True, capture_output=True)
        again, second = build(folder / "net.yaml", folder / "cache", repo)
        if "weights_only" not in second["export"].get("meta", {}) or "from" not in second["export"]["meta"]["weights_only"]:
            sys.exit(f"{name}: the rebuild exported again: {second['export']['reason']}")
        print(f"{name} ({repo}): {second['export']['reason']}", file=sys.stderr)
        return {"cold_export": first["export"]["seconds"], "cold_build": cold,
                "weights_export": second["export"]["seconds"], "weights_build": again}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--baseline", type=Path, help="another trtbuild checkout, run in the same rounds")
    args = parser.parse_args()
    compile_bytecode()
    if args.baseline:
        compileall.compile_dir(args.baseline / "trtbuild", quiet=1)
    repos = {"this": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"python {platform.python_version()}")
    print("| model | code | cold export step | weights-only export step | ratio | cold build | weights-only rebuild | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        rounds = {label: [] for label in repos}
        for i in range(args.repeat):  # alternating: each round runs every checkout under the same load
            for label, repo in repos.items():
                rounds[label].append(round_of(name, 10 * i, repo))
        for label, done in rounds.items():
            med = {k: statistics.median(r[k] for r in done) for k in done[0]}
            print(f"| {name} | {label} | {med['cold_export']:.2f} s | {med['weights_export']:.2f} s | "
                  f"**{med['weights_export'] / med['cold_export']:.2f}x** | {med['cold_build']:.2f} s | "
                  f"{med['weights_build']:.2f} s | **{med['weights_build'] / med['cold_build']:.2f}x** |", flush=True)
        print(f"load {os.getloadavg()[0]:.1f} after {name}", file=sys.stderr)


if __name__ == "__main__":
    main()
