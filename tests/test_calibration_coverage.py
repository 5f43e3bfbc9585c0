"""int8 calibrated on some shapes, built for others: the accuracy gate names each profile whose range
leaves the calibrated sizes, and a failure's first line (the run's recap) names the output and the
profile. Real ONNX Runtime quantization and TensorRT-RTX plans."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

pytestmark = pytest.mark.slow

ENGINE = {"backend": "tensorrt-rtx", "workspace": "256MiB", "optimization_level": 0, "precision": "int8"}
PROFILES = [{"name": "short", "inputs": {"x": {"min": [1, 1, 8], "opt": [2, 4, 8], "max": [4, 8, 8]}}},
            {"name": "long", "inputs": {"x": {"min": [1, 8, 8], "opt": [2, 32, 8], "max": [4, 64, 8]}}}]


def sequence_model(path) -> None:
    """x [N, T, 8] -> MatMul -> Relu -> y: a token mixer in miniature, any sequence length."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="proj"), helper.make_node("Relu", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def project(tmp_path, max_relative_error: float):
    from conftest import build_recipe

    sequence_model(tmp_path / "seq.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).standard_normal((4, 4, 8)).astype(np.float32))
    recipe = tmp_path / "seq.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "seq", "source": {"framework": "onnx", "path": "seq.onnx"}, "inputs": {"x": {"shape": [-1, -1, 8]}},
        "profiles": PROFILES, "engine": ENGINE,
        "precision": {"calibration": {"data": "calib.npz"}, "max_relative_error": max_relative_error}}, sort_keys=False))
    return build_recipe(recipe)


def accuracy_step(report: dict) -> dict:
    return next(s for s in report["steps"] if s["step"] == "accuracy")


OUTSIDE = ("profile 'short' takes x dim 1 from 1 to 8, the calibration data only 4: give calibration data at those "
           "sizes too", "profile 'long' takes x dim 1 from 8 to 64, the calibration data only 4: give calibration "
           "data at those sizes too")


def test_profiles_outside_the_calibrated_sizes_are_warnings(tmp_path):
    code, report = project(tmp_path, max_relative_error=10.0)
    assert code == 0, report
    precision = next(s for s in report["steps"] if s["step"] == "precision")
    assert precision["meta"]["calibration"]["shapes"] == {"x": [[2, 2], [4, 4], [8, 8]]}
    assert accuracy_step(report)["meta"]["warnings"] == list(OUTSIDE)


def test_a_failed_gate_names_the_output_the_profile_and_the_uncalibrated_ranges_first(tmp_path, capsys):
    code, report = project(tmp_path, max_relative_error=1e-9)
    assert code == 1, report
    first = accuracy_step(report)["error"].splitlines()[0]
    assert first.startswith("int8 model is less accurate than allowed: output 'y' at profile 'short', relative error ")
    assert first.endswith(f"> 1e-09 (1 more below); {OUTSIDE[0]}; {OUTSIDE[1]}; raise precision.max_relative_error or "
                          "keep sensitive ops in fp32 with precision.keep_fp32")
    err = capsys.readouterr().err
    assert "output 'y' at profile 'short'" in err.rsplit(" failure(s), exit code ", 1)[1]  # the recap
    # said before the precision step ran, from the calibration files' headers, at the recipe's line
    said = err.index(f"trtbuild: warning: {tmp_path / 'seq.yaml'}:")
    assert err[said:].startswith(f"trtbuild: warning: {tmp_path / 'seq.yaml'}:")
    line = err[said:].splitlines()[0]
    assert line.endswith(f": precision.calibration.data: {OUTSIDE[0]}")
    assert said < err.index("seq/precision")  # before its step line
