"""Calibration data: how files become batches, and data that does not fit the model named (the file, the
expected and actual shape or type, exit 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import recipe_dict
from onnx import TensorProto, helper, numpy_helper

pytestmark = pytest.mark.slow


def int8_recipe(data: str) -> dict:
    recipe = recipe_dict("conv.onnx", precision="int8")
    recipe["precision"] = {"calibration": {"data": data, "batches": 2}}
    return recipe


def precision_step(report: dict) -> dict:
    return next(s for s in report["steps"] if s["step"] == "precision")


def save(project, name: str, array) -> None:
    (project.root / "calib").mkdir(exist_ok=True)
    np.save(project.root / "calib" / name, array)


def test_nhwc_data_for_an_nchw_input_says_to_transpose(project):
    save(project, "a.npy", np.zeros((2, 16, 16, 3), np.float32))
    project.write_recipe(int8_recipe("calib/*.npy"))
    code, report = project.build()
    assert code == 2
    error = precision_step(report)["error"]
    assert f"{project.recipe}:" in error and "calib/a.npy" in error
    assert "input 'x' has shape [2, 16, 16, 3], the model takes [-1, 3, 16, 16]" in error
    assert "looks NHWC" in error and "transpose(0, 3, 1, 2)" in error


def test_float64_data_is_cast_and_single_samples_are_batched(project):
    save(project, "a.npy", np.random.default_rng(0).random((3, 16, 16)))  # what np.random.rand makes: float64
    recipe = int8_recipe("calib/*.npy")
    recipe["precision"]["max_relative_error"] = 10.0  # [0, 1) data calibrates ranges the gate's normal inputs exceed
    project.write_recipe(recipe)
    code, report = project.build()
    assert code == 0, precision_step(report).get("error")


def test_integer_data_for_a_float_input_names_the_types(project):
    save(project, "a.npy", np.ones((2, 3, 16, 16), np.int64))
    project.write_recipe(int8_recipe("calib/*.npy"))
    code, report = project.build()
    assert code == 2
    assert "input 'x' is int64, the model takes float32" in precision_step(report)["error"]


def test_npz_without_the_input_lists_its_arrays(project):
    (project.root / "calib").mkdir()
    np.savez(project.root / "calib" / "data.npz", images=np.zeros((4, 3, 16, 16), np.float32))
    project.write_recipe(int8_recipe("calib/data.npz"))
    code, report = project.build()
    assert code == 2
    error = precision_step(report)["error"]
    assert "data.npz has no arrays for inputs ['x'] (it has ['images'])" in error


def test_every_npz_shard_is_used(project):
    (project.root / "calib").mkdir()
    rng = np.random.default_rng(0)
    for i, scale in enumerate((1.0, 1.0, 50.0)):  # the last shard widens the calibrated ranges
        np.savez(project.root / "calib" / f"shard{i}.npz", x=(rng.standard_normal((2, 3, 16, 16)) * scale).astype(np.float32))
    recipe = int8_recipe("calib/*.npz")
    recipe["precision"]["calibration"]["batches"] = 3
    recipe["precision"]["max_relative_error"] = 10.0
    project.write_recipe(recipe)
    model = lambda report: Path(precision_step(report)["outputs"]["model.onnx"]).read_bytes()
    code, report = project.build()
    assert code == 0, precision_step(report).get("error")
    all_shards = model(report)
    (project.root / "calib" / "shard2.npz").unlink()
    code, report = project.build()
    assert code == 0
    assert model(report) != all_shards


def test_fewer_batches_than_asked_warns_and_the_report_says_what_was_used(project, capsys):
    (project.root / "calib").mkdir()
    data = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)  # 2 batches at opt 2
    np.savez(project.root / "calib" / "data.npz", x=data)
    recipe = int8_recipe("calib/data.npz")
    recipe["precision"]["calibration"]["batches"] = 8
    recipe["precision"]["max_relative_error"] = 10.0  # this test is about the count, not the accuracy
    project.write_recipe(recipe)
    code, report = project.build()
    assert code == 0
    meta = precision_step(report)["meta"]
    assert meta["calibration"] == {"batches": 2, "samples": 4, "batches_asked": 8,
                                   "shapes": {"x": [[2, 2], [3, 3], [16, 16], [16, 16]]}}
    assert "calibration used 2 batches (4 samples), fewer than the 8" in meta["warnings"][0]
    assert "calibration used 2 batches" in capsys.readouterr().err


def kv_cache_model() -> onnx.ModelProto:
    """A decode step's layout: tokens [batch, length, 8] and a cache [layers, batch, past, 8], joined on the
    length, then a MatMul (what int8 quantizes)."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("ReduceMean", ["past", "layers"], ["cached"], keepdims=0, name="layers_mean"),
             helper.make_node("Concat", ["cached", "x"], ["joined"], axis=1, name="join"),
             helper.make_node("MatMul", ["joined", "w"], ["y"], name="proj")]
    axes = numpy_helper.from_array(np.array([0], np.int64), "layers")
    graph = helper.make_graph(
        nodes, "decode", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", 8]),
                          helper.make_tensor_value_info("past", TensorProto.FLOAT, [2, "N", "P", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", 8])], [weight, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def test_npz_shards_whose_arrays_differ_in_their_first_dim_are_one_batch_each(project):
    # the cache's first dim is its layers (2), the tokens' their batch (4): cutting both into batches of
    # opt's batch (2) would pair 2 rows of tokens with a cache of 4, which no model runs
    project.write_model(kv_cache_model())
    recipe = recipe_dict("conv.onnx", precision="int8")
    recipe["inputs"] = {"x": {"min": [1, 1, 8], "opt": [2, 4, 8], "max": [4, 8, 8]},
                        "past": {"min": [2, 1, 1, 8], "opt": [2, 2, 4, 8], "max": [2, 4, 8, 8]}}
    recipe["precision"] = {"calibration": {"data": "calib/*.npz"}}
    project.write_recipe(recipe)
    (project.root / "calib").mkdir()
    rng = np.random.default_rng(1)
    for i, (batch, length, past) in enumerate([(4, 8, 8), (2, 4, 4), (1, 1, 1)]):
        np.savez(project.root / "calib" / f"shard{i}.npz",
                 x=rng.standard_normal((batch, length, 8)).astype(np.float32),
                 past=rng.standard_normal((2, batch, past, 8)).astype(np.float32))
    code, report = project.build()
    assert code == 0, precision_step(report).get("error")
    assert {s["step"]: s["status"] for s in report["steps"] if s["step"] != "verify"} == {
        "check": "built", "simplify": "built", "precision": "built", "accuracy": "built", "engine": "built"}
    quantized = onnx.load(precision_step(report)["outputs"]["model.onnx"])
    assert "QuantizeLinear" in {n.op_type for n in quantized.graph.node}
