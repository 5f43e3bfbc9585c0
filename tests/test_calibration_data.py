"""Calibration data that does not fit the model: the file, the expected and actual shape or type, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import recipe_dict

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
