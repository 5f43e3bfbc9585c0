"""Nodes no engine backend can import are refused at `check`, before any engine step, naming every
one of them, with the fix on the first line (the run's recap shows that line). Real tf2onnx exports,
the real TensorRT-RTX parser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import build_recipe

ENGINE = "engine: {backend: tensorrt-rtx, workspace: 256MiB, optimization_level: 0}\n"


def check_step(report: dict) -> dict:
    [check] = [s for s in report["steps"] if s["step"] == "check"]
    assert [s["status"] for s in report["steps"] if s["step"] == "engine"] == ["skipped"]  # no engine step ran
    return check


def recap_line(stderr: str, step: str) -> str:
    """The recap's line for `step`, after the failures heading at the end of the run."""
    recap = stderr.rsplit(" failure(s), exit code ", 1)[1]
    return next(line.strip() for line in recap.splitlines() if line.strip().startswith(step))


def test_a_tf2onnx_export_with_leftover_tensorflow_ops_is_refused_at_check_naming_them(tmp_path, capsys):
    pytest.importorskip("tf2onnx")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    class Model(tf.Module):  # tf2onnx has no conversion for Erfc and keeps the TensorFlow op as it is
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))

        # autograph off: nothing to convert, and its converter trips over a class made inside a test
        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")], autograph=False)
        def __call__(self, x):
            return {"y": tf.math.erfc(tf.matmul(x, self.w))}

    module = Model()
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures=module.__call__)
    recipe = tmp_path / "model.yaml"
    recipe.write_text("name: model\nsource: {framework: tensorflow, path: saved}\n"
                      "inputs:\n  x: {min: [1, 8], opt: [2, 8], max: [4, 8]}\n" + ENGINE)
    code, report = build_recipe(recipe)
    assert code == 1, report
    assert report["steps"][0]["status"] == "built"  # tf2onnx wrote it, warning in its log
    check = check_step(report)
    assert check["status"] == "failed"
    first, *nodes = check["error"].splitlines()
    assert first.startswith("the model holds 1 node that no engine backend can import, not being ONNX ops (Erfc); "
                            "fix: these are ops the exporter could not convert (tf2onnx keeps")
    [node] = nodes
    assert node.strip().endswith("(Erfc): not an ONNX op")
    assert "tf.math.erfc(x) as 1 - tf.math.erf(x)" in recap_line(capsys.readouterr().err, "model/check")
    assert [s["status"] for s in report["steps"] if s["step"] == "parity"] == ["skipped"]  # not an ORT error there
    # the step's repro script says the same, run by itself
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, check["repro"]], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and "(Erfc): not an ONNX op" in done.stdout, done.stdout + done.stderr


def detector_head(path: Path, count: int) -> None:
    """RetinaNet's and FCOS's post-processing in miniature: a NonZero per feature level."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="scores")]
    outputs = []
    for i in range(count):
        nodes += [helper.make_node("NonZero", ["r"], [f"found{i}"], name=f"level{i}/find"),
                  helper.make_node("Transpose", [f"found{i}"], [f"boxes{i}"], name=f"level{i}/boxes", perm=[1, 0])]
        outputs.append(helper.make_tensor_value_info(f"boxes{i}", TensorProto.INT64, None))
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])], outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def test_every_nonzero_node_is_named_and_the_recap_keeps_the_fix(tmp_path, capsys):
    detector_head(tmp_path / "head.onnx", 3)
    recipe = tmp_path / "head.yaml"
    recipe.write_text("name: head\nsource: {framework: onnx, path: head.onnx}\n" + ENGINE)
    code, report = build_recipe(recipe)
    assert code == 1, report
    first, *nodes = check_step(report)["error"].splitlines()
    assert first.startswith("the engine backend cannot import 3 nodes (NonZero x3); fix: tensorrt-rtx: TensorRT-RTX "
                            "has no importer or plugin for it: export the model without it")
    assert [n.strip().split(":")[0] for n in nodes] == [f"node 'level{i}/find' (NonZero)" for i in range(3)]
    recap = recap_line(capsys.readouterr().err, "head/check")
    assert "3 nodes (NonZero x3); fix: " in recap and "targets: [tensorrt]" in recap
