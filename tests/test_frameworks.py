"""Framework sources: real torch.onnx / tf2onnx exports, parity on ONNX Runtime, TensorRT-RTX plans."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, copy_built, statuses
from trtbuild.commands.cli import main

pytest.importorskip("torch")
pytest.importorskip("tf2onnx")

NET = '''
import torch


class Double(torch.autograd.Function):
    """x * 2, but exported as Relu: an op exported wrong on purpose."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def symbolic(g, x):
        return g.op("Relu", x)


class Net(torch.nn.Module):
    def __init__(self, channels=4, wrong_export=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, channels, 3, padding=1)
        self.wrong_export = wrong_export

    def forward(self, x):
        y = self.conv(x)
        return Double.apply(y) if self.wrong_export else torch.relu(y)


def build(channels=4, wrong_export=False):
    return Net(channels, wrong_export)
'''


def torch_recipe(**source) -> dict:
    return {
        "name": "net",
        "source": {"framework": "pytorch", "entrypoint": "mynet:build", "kwargs": {"channels": 4},
                   "outputs": ["y"], **source},
        "inputs": {"x": {"shape": [-1, 3, 16, 16], "min": [1, 3, 16, 16], "opt": [2, 3, 16, 16], "max": [4, 3, 16, 16]}},
        "onnx": {"opset": 17},
        "engine": {"backend": "tensorrt-rtx", "workspace": "256MiB", "optimization_level": 0},
    }


def build(recipe: Path, cache: Path, *args: str) -> tuple[int, dict]:
    report = recipe.parent / "report.json"
    report.unlink(missing_ok=True)
    code = main([str(recipe), "--cache-dir", str(cache), "--report", str(report), *args])
    return code, json.loads(report.read_text())


@pytest.fixture
def torch_project(tmp_path):
    (tmp_path / "mynet.py").write_text(NET)
    recipe = tmp_path / "net.yaml"
    recipe.write_text(json.dumps(torch_recipe()))
    return recipe


ALL_BUILT = {"export": "built", "check": "built", "parity": "built", "simplify": "built", "engine": "built"}
ALL_CACHED = {step: "cached" for step in ALL_BUILT}


def _first_build(folder: Path) -> None:
    (folder / "mynet.py").write_text(NET)
    (folder / "net.yaml").write_text(json.dumps(torch_recipe()))
    code, report = build(folder / "net.yaml", folder / "cache")
    assert code == 0 and statuses(report) == ALL_BUILT, report


@pytest.fixture
def built_torch_project(built_once, tmp_path):
    """torch_project after its first build, every step built (done once per run and copied here): its recipe."""
    copy_built(built_once("frameworks-torch-net", _first_build), tmp_path)
    return tmp_path / "net.yaml"


def test_resnet50_example_exports_checks_parity_and_builds(tmp_path):
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    code, report = build(tmp_path / "recipes" / "resnet50.yaml", tmp_path / "cache")
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["check"]["meta"]["opset"] == 17 and steps["check"]["meta"]["outputs"] == ["logits"]
    [row] = steps["parity"]["meta"]["parity"]["outputs"]
    assert row["ok"] and row["shape"] == [4, 1000] and row["max_abs"] < 1e-3
    assert Path(steps["engine"]["outputs"]["model.plan"]).stat().st_size > 50_000_000  # fp32 ResNet-50 weights
    code, again = build(tmp_path / "recipes" / "resnet50.yaml", tmp_path / "cache")
    assert code == 0 and statuses(again) == ALL_CACHED


def test_opset_change_reruns_export_and_everything_after(built_torch_project, tmp_path):
    torch_project = built_torch_project
    data = torch_recipe()
    data["onnx"]["opset"] = 18
    torch_project.write_text(json.dumps(data))
    code, dry = build(torch_project, tmp_path / "cache", "--dry-run")
    assert dry["steps"][0]["reason"] == "params.opset: 17 -> 18"
    code, report = build(torch_project, tmp_path / "cache")
    assert code == 0 and statuses(report) == ALL_BUILT


def test_editing_the_model_file_reruns_export_and_after(built_torch_project, tmp_path):
    torch_project = built_torch_project
    net = tmp_path / "mynet.py"
    net.write_text(net.read_text().replace("torch.relu(y)", "torch.sigmoid(y)"))
    code, report = build(torch_project, tmp_path / "cache")
    assert code == 0 and statuses(report) == ALL_BUILT
    assert report["steps"][0]["reason"].startswith("inputs.code.(main) changed")


def test_comment_edit_reruns_export_only(built_torch_project, tmp_path):
    torch_project = built_torch_project
    net = tmp_path / "mynet.py"
    net.write_text("# a comment\n" + net.read_text())
    code, report = build(torch_project, tmp_path / "cache")
    assert code == 0
    # Export reruns; the ONNX model and reference outputs come out byte-identical, so nothing else does.
    assert statuses(report) == {**ALL_CACHED, "export": "built"}


def test_wrongly_exported_op_fails_parity_with_error_table(torch_project, tmp_path, capsys):
    data = torch_recipe()
    data["source"]["kwargs"]["wrong_export"] = True
    data["source"]["exporter"] = "torchscript"  # symbolic() is how the TorchScript exporter writes a Function
    torch_project.write_text(json.dumps(data))
    code, report = build(torch_project, tmp_path / "cache")
    assert code == 1
    assert statuses(report)["parity"] == "failed" and statuses(report)["engine"] == "skipped"
    parity = report["steps"][2]
    assert "ONNX Runtime disagrees with pytorch" in parity["error"]
    assert "max abs err" in parity["error"] and "FAIL" in parity["error"]
    [row] = parity["meta"]["parity"]["outputs"]
    assert row["output"] == "y" and not row["ok"] and row["max_abs"] > 0.1
    assert "max rel err" in capsys.readouterr().err


def test_checkpoint_is_loaded_and_keyed(torch_project, tmp_path):
    import torch

    sys_path = str(tmp_path)
    import sys

    sys.path.insert(0, sys_path)
    try:
        from mynet import build as make
    finally:
        sys.path.remove(sys_path)
    torch.manual_seed(7)
    torch.save(make(4).state_dict(), tmp_path / "net.pt")
    torch_project.write_text(json.dumps(torch_recipe(checkpoint="net.pt")))
    code, report = build(torch_project, tmp_path / "cache")
    assert code == 0 and statuses(report) == ALL_BUILT
    torch.manual_seed(8)
    torch.save(make(4).state_dict(), tmp_path / "net.pt")
    code, dry = build(torch_project, tmp_path / "cache", "--dry-run")
    assert dry["steps"][0]["status"] == "would-run"
    assert dry["steps"][0]["reason"].startswith("inputs.checkpoint.(main) changed")


def test_torchscript_file_source(tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    torch.jit.script(model).save(str(tmp_path / "net.ts"))
    data = torch_recipe()
    data["source"] = {"framework": "pytorch", "path": "net.ts", "outputs": ["y"]}
    recipe = tmp_path / "net.yaml"
    recipe.write_text(json.dumps(data))
    code, report = build(recipe, tmp_path / "cache")
    assert code == 0, report
    assert statuses(report) == ALL_BUILT


def test_dynamo_exporter(torch_project, tmp_path, capsys):
    recipe = torch_recipe(exporter="dynamo")
    torch_project.write_text(json.dumps(recipe))
    assert build(torch_project, tmp_path / "cache")[0] == 2  # opset 17: dynamo writes 18 and newer
    assert "the dynamo exporter writes opset 18 and newer" in capsys.readouterr().err
    recipe["onnx"] = {"opset": 18}
    torch_project.write_text(json.dumps(recipe))
    code, report = build(torch_project, tmp_path / "cache")
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    assert report["steps"][0]["meta"]["exporter"] == "dynamo"


def test_keras_unet_with_upsampling_builds_a_plan(tmp_path):
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    code, report = build(tmp_path / "recipes" / "unet_keras.yaml", tmp_path / "cache")
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    io = json.loads(Path(report["steps"][1]["outputs"]["io.json"]).read_text())
    assert io["inputs"] == [{"name": "image", "dtype": "float32", "shape": [-1, 3, 128, 128]}]
    # Pooled twice and upsampled twice (Keras 3 lowers UpSampling2D to Tile): full resolution out, NHWC.
    assert "Tile" in io["ops"] and io["outputs"][0]["shape"][1:] == [128, 128, 2]
    [row] = report["steps"][2]["meta"]["parity"]["outputs"]
    assert row["ok"] and row["shape"] == [2, 128, 128, 2]


def test_tf1_frozen_graph_builds_a_plan(tmp_path):
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    code, report = build(tmp_path / "recipes" / "inception_frozen.yaml", tmp_path / "cache")
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    [row] = report["steps"][2]["meta"]["parity"]["outputs"]
    assert row["output"] == "predictions:0" and row["ok"]


def test_saved_model_with_npz_parity_inputs(tmp_path):
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="features")])
        def __call__(self, features):
            return {"scores": tf.nn.softmax(tf.matmul(features, self.w))}

    module = Model()
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures=module.__call__)
    np.savez(tmp_path / "inputs.npz", features=np.ones((2, 3), np.float32))
    recipe = tmp_path / "sm.yaml"
    recipe.write_text(textwrap.dedent("""\
        name: sm
        source: {framework: tensorflow, path: saved}
        inputs:
          features: {shape: [-1, 3], min: [1, 3], opt: [2, 3], max: [8, 3]}
        parity: {data: inputs.npz}
        engine: {backend: tensorrt-rtx, workspace: 64MiB}
    """))
    code, report = build(recipe, tmp_path / "cache")
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    parity = report["steps"][2]["meta"]["parity"]
    assert parity["inputs"] == "inputs.npz" and parity["outputs"][0]["output"] == "scores"


def test_missing_framework_fails_with_install_command(torch_project, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert main([str(torch_project), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "pip install 'trtbuild[torch]'" in capsys.readouterr().err


def test_a_worker_killed_mid_step_fails_only_its_recipe(tmp_path):
    """An out-of-memory kill, for real: this model's constructor SIGKILLs the process it runs in."""
    (tmp_path / "mynet.py").write_text(NET)
    (tmp_path / "oom.py").write_text("import os\nimport signal\n\n\ndef build():\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    (tmp_path / "net.yaml").write_text(json.dumps(torch_recipe()))
    (tmp_path / "oom.yaml").write_text(json.dumps(torch_recipe(entrypoint="oom:build", kwargs={}) | {"name": "oom"}))
    report = tmp_path / "report.json"
    code = main([str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--report", str(report), "-j", "2"])
    assert code == 1
    steps = {(s["recipe"], s["step"]): s for s in json.loads(report.read_text())["steps"]}
    export = steps[("oom", "export")]
    assert export["status"] == "failed" and "worker process died (exit code -9)" in export["error"]
    assert steps[("oom", "check")]["status"] == "skipped"
    assert steps[("net", "engine")]["status"] == "built"  # the other recipe's workers were not harmed
