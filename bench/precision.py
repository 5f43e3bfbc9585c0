"""Accuracy-gate figures and costs of fp32 / fp16 / int8 / fp8 for ResNet-50 (recipes/resnet50*.yaml),
and of bf16 where NVIDIA ModelOpt is installed.

    python bench/precision.py

Builds the recipes into one fresh cache (they share the export, check, parity and
simplify steps) and prints, per precision: the accuracy gate's relative L2 error and max
absolute error against the fp32 ONNX model on ONNX Runtime, the transform's time and the
plan size. Random weights and synthetic calibration data: the figures show the machinery,
not the accuracy of a trained network.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, compile_bytecode

PRECISIONS = ("", "_fp16", "_int8", "_fp8")


def main() -> None:
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="trtbuild-bench-"))
    try:
        shutil.copytree(REPO / "recipes", work / "recipes")
        precisions = PRECISIONS
        if importlib.util.find_spec("modelopt"):  # bf16 needs ModelOpt (and fp16 then uses it too)
            fp16 = (work / "recipes" / "resnet50_fp16.yaml").read_text()
            (work / "recipes" / "resnet50_bf16.yaml").write_text(fp16.replace("fp16", "bf16"))
            precisions += ("_bf16",)
        report = work / "report.json"
        recipes = [str(work / "recipes" / f"resnet50{s}.yaml") for s in precisions]
        subprocess.run([sys.executable, "-m", "trtbuild", *recipes, "--cache-dir", str(work / "cache"),
                        "--report", str(report), "--quiet"], check=True)
        steps = json.loads(report.read_text())["steps"]
        print(f"{'recipe':<15} {'converter':<17} {'transform':>10} {'rel L2 err':>11} {'max abs err':>12} {'engine':>8} {'plan MiB':>9}")
        for recipe in (f"resnet50{s}" for s in precisions):
            mine = {s["step"]: s for s in steps if s["recipe"] == recipe}
            gate = mine.get("accuracy", {}).get("meta", {}).get("accuracy", {}).get("outputs", [{}])[0]
            plan = Path(mine["engine"]["outputs"]["model.plan"]).stat().st_size / 2**20
            transform = mine.get("precision", {}).get("seconds")
            converter = mine.get("precision", {}).get("meta", {}).get("converter", "-")
            print(f"{recipe:<15} {converter:<17} {f'{transform:.2f} s' if transform else '-':>10} "
                  f"{gate.get('rel_l2', 0):>11.2e} {gate.get('max_abs', 0):>12.2e} "
                  f"{mine['engine']['seconds']:>7.2f}s {plan:>9.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
