"""Repro scripts: a failed step leaves a script beside its log that reproduces the failure by running
the step's own code on the same job; `trtbuild repro` writes one for any step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, conv_model, needs, recipe_dict

pytestmark = pytest.mark.slow


def run_alone(script: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """The script by itself, from another folder, without PYTHONPATH: it runs the step's own code from
    the trtbuild that wrote it (this checkout, put first on its sys.path), not another installation's."""
    text = script.read_text()
    assert "from trtbuild.execution.repro import reproduce" in text and json.dumps(str(REPO))[1:-1] in text
    work = tmp_path / "alone"
    work.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)


def failed_step(report: dict, name: str) -> dict:
    step = next(s for s in report["steps"] if s["step"] == name)
    assert step["status"] == "failed", step
    return step


def test_an_op_tensorrt_cannot_import_is_reproduced(project, tmp_path, capsys):
    project.write_model(conv_model(extra_op="Det"))
    code, report = project.build()
    check = failed_step(report, "check")  # the backend's parser, asked at check
    assert check["repro"].endswith("repro.py") and f"repro: {check['repro']}" in capsys.readouterr().err
    done = run_alone(Path(check["repro"]), tmp_path)
    assert done.returncode == 1
    assert "node 'det_node' (Det): tensorrt-rtx cannot import it" in done.stdout


def test_a_failed_accuracy_gate_is_reproduced_with_its_table(project, tmp_path):
    from helpers import quantized_recipe, write_calibration

    write_calibration(project.root)
    project.write_recipe(quantized_recipe(max_relative_error=1e-9))
    code, report = project.build()
    accuracy = failed_step(report, "accuracy")
    rel_l2 = accuracy["meta"]["accuracy"]["outputs"][0]["rel_l2"]
    done = run_alone(Path(accuracy["repro"]), tmp_path)
    assert done.returncode == 1, done.stderr
    assert "relative L2 error <= 1e-09" in done.stdout and "FAIL" in done.stdout
    assert f"{rel_l2:.3e}" in done.stdout  # the same inputs, the same error


NET = '''
import torch


class Net(torch.nn.Module):
    def forward(self, x):
        if x.sum() > float("inf"):  # never true; data-dependent all the same
            return x
        raise NotImplementedError("this block has no export path yet")


def build():
    return Net()
'''


def test_an_export_that_raises_is_reproduced(tmp_path):
    needs("torch")
    (tmp_path / "net.py").write_text(NET)
    recipe = {"name": "net", "source": {"framework": "pytorch", "entrypoint": "net:build", "exporter": "torchscript"},
              "inputs": {"x": {"shape": [1, 3, 8, 8]}}, "engine": {"backend": "tensorrt-rtx"}}
    (tmp_path / "net.yaml").write_text(json.dumps(recipe))
    from conftest import build_recipe

    code, report = build_recipe(tmp_path / "net.yaml")
    export = failed_step(report, "export")
    done = run_alone(Path(export["repro"]), tmp_path)
    assert done.returncode != 0 and "this block has no export path yet" in done.stderr


LOADER = '''
from pathlib import Path


def batches():
    folder = Path(__file__).with_name("calibration-images")
    files = sorted(folder.iterdir())  # the folder was never synced to this machine
    yield {}
'''


def test_a_calibration_error_is_reproduced(project, tmp_path):
    (project.root / "calib_loader.py").write_text(LOADER)
    data = recipe_dict("conv.onnx", precision="int8")
    data["source"]["python_path"] = ["."]
    data["precision"] = {"calibration": {"loader": "calib_loader:batches"}}
    project.write_recipe(data)
    code, report = project.build()
    precision = failed_step(report, "precision")
    assert "calibration-images" in precision["error"]
    done = run_alone(Path(precision["repro"]), tmp_path)
    assert done.returncode != 0 and "FileNotFoundError" in done.stderr and "calibration-images" in done.stderr


def test_repro_writes_a_script_for_any_step(project, tmp_path):
    code, report = project.build()
    assert code == 0
    built = next(s for s in report["steps"] if s["step"] == "simplify")
    done = subprocess.run([sys.executable, "-m", "trtbuild", "repro", str(project.recipe), "simplify",
                           "--cache-dir", str(project.cache)], env=os.environ | {"PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    script = Path(done.stdout.strip())
    ran = run_alone(script, tmp_path)
    assert ran.returncode == 0, ran.stderr
    meta = json.loads(ran.stdout[:ran.stdout.rindex("}") + 1])  # the step's own metadata, as the build had it
    assert meta["nodes_after"] == built["meta"]["nodes_after"] < meta["nodes_before"]
    assert meta["verification"] == built["meta"]["verification"]
    import onnx

    model = onnx.load(tmp_path / "alone" / "model.onnx")  # the step's output, where the script ran
    assert len(model.graph.node) == meta["nodes_after"]
