"""fp16 / int8 / fp8 as cached steps behind an accuracy gate, built into real TensorRT-RTX plans."""

from __future__ import annotations


import numpy as np
import onnx
from onnx import numpy_helper

from conftest import recipe_dict, statuses
from helpers import quantized_recipe, write_calibration


def test_fp16_model_has_float16_weights_and_builds(project):
    project.write_recipe(recipe_dict("conv.onnx", precision="fp16"))
    code, report = project.build()
    assert code == 0, report
    assert statuses(report) == {"check": "built", "simplify": "built", "precision": "built", "accuracy": "built",
                                "engine": "built"}
    steps = {s["step"]: s for s in report["steps"]}
    model = onnx.load(steps["precision"]["outputs"]["model.onnx"])
    assert {i.data_type for i in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    [row] = steps["accuracy"]["meta"]["accuracy"]["outputs"]
    assert row["ok"] and 0 < row["rel_l2"] < 0.01
    assert "/out/conv/fp16/model.onnx" in steps["precision"]["outputs"]["model.onnx"]


def test_a_model_newer_than_onnx_runtime_reads_says_how_to_save_it(project):
    """onnx's helpers write IR version 14, which this ONNX Runtime does not read: the simplify warning
    and the int8 step's error say so, and what to do, instead of ONNX Runtime's C++ signature."""
    model = onnx.load(project.root / "conv.onnx")
    model.ir_version = 14
    onnx.save(model, project.root / "conv.onnx")
    write_calibration(project.root)
    project.write_recipe(quantized_recipe())
    code, report = project.build()
    steps = {s["step"]: s for s in report["steps"]}
    assert code == 2 and steps["precision"]["status"] == "failed"  # the model's fault: as a recipe mistake
    assert steps["precision"]["error"].startswith("ONNX Runtime, which calibrates the model, cannot run it: the "
                                                  "model's ONNX IR version is 14 and this ONNX Runtime reads up to")
    assert "`model.ir_version = " in steps["precision"]["error"] and "onnxruntime::" not in steps["precision"]["error"]
    [warning] = [w for w in steps["simplify"]["meta"]["warnings"] if "not checked" in w]
    assert "the model's ONNX IR version is 14" in warning


def test_int8_model_has_symmetric_qdq_and_builds(project):
    write_calibration(project.root)
    project.write_recipe(quantized_recipe())
    code, report = project.build()
    assert code == 0, report
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["engine"]["status"] == "built"
    model = onnx.load(steps["precision"]["outputs"]["model.onnx"])
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert {n.op_type for n in qdq} == {"QuantizeLinear", "DequantizeLinear"}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in qdq if len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert steps["accuracy"]["meta"]["accuracy"]["outputs"][0]["rel_l2"] < 0.1


def test_fp8_model_has_float8_qdq_and_builds_for_ada_and_newer(project):
    write_calibration(project.root)
    project.write_recipe(quantized_recipe("fp8", targets=["tensorrt-rtx", "tensorrt-rtx:sm89+sm120"]))
    code, report = project.build()
    assert code == 0, report
    engines = [s for s in report["steps"] if s["step"] == "engine"]
    assert [s["status"] for s in engines] == ["built", "built"]
    steps = {s["step"]: s for s in report["steps"]}
    model = onnx.load(steps["precision"]["outputs"]["model.onnx"])
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19  # float8 Q/DQ
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points = [inits[n.input[2]] for n in qdq]
    assert zero_points and {z.data_type for z in zero_points} == {onnx.TensorProto.FLOAT8E4M3FN}
    assert not any(numpy_helper.to_array(z).astype(np.float32).any() for z in zero_points)
    # Weights stored in float8, quantized per output channel: one scale per Conv filter.
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight_dq = next(n for n in qdq if n.output[0] == conv.input[1])
    assert inits[weight_dq.input[0]].data_type == onnx.TensorProto.FLOAT8E4M3FN
    assert numpy_helper.to_array(inits[weight_dq.input[1]]).shape == (8,)
    [row] = steps["accuracy"]["meta"]["accuracy"]["outputs"]
    assert row["ok"] and 0 < row["rel_l2"] < 0.15
    # fp8 plans need sm_89+: with no GPU here the verify step says so.
    verify = [s for s in report["steps"] if s["step"] == "verify"]
    assert all("fp8: 8.9 or newer" in s["reason"] for s in verify)


def test_fp8_for_a_pre_ada_target_is_a_recipe_error(project, capsys):
    write_calibration(project.root)
    project.write_recipe(quantized_recipe("fp8", targets=["tensorrt-rtx:sm86+sm120"]))
    from trtbuild.commands.cli import main

    assert main(["build", str(project.recipe), "--cache-dir", str(project.cache)]) == 2
    err = capsys.readouterr().err
    assert "conv.yaml:" in err and "engine.precision fp8 needs sm_89 or newer" in err and "sm_86" in err
    assert not (project.cache / "actions").exists()


def test_new_calibration_data_reruns_quantize_gate_and_engine_only(project):
    write_calibration(project.root)
    project.write_recipe(quantized_recipe())
    assert project.build()[0] == 0
    write_calibration(project.root, seed=1)
    code, report = project.build()
    assert code == 0
    assert statuses(report) == {"check": "cached", "simplify": "cached", "precision": "built", "accuracy": "built",
                                "engine": "built"}
    assert report["steps"][2]["reason"].startswith("inputs.calibration.")


def test_fp16_to_fp32_and_back_rebuilds_nothing(project):
    project.write_recipe(recipe_dict("conv.onnx", precision="fp16"))
    assert project.build()[0] == 0
    project.write_recipe(recipe_dict("conv.onnx"))
    code, fp32 = project.build()
    assert statuses(fp32) == {"check": "cached", "simplify": "cached", "engine": "built"}
    project.write_recipe(recipe_dict("conv.onnx", precision="fp16"))
    code, back = project.build()
    assert code == 0 and set(statuses(back).values()) == {"cached"}


def test_tf32_is_an_engine_setting(project):
    assert project.build()[0] == 0
    project.write_recipe(recipe_dict("conv.onnx", precision="tf32"))
    code, report = project.build()
    assert code == 0 and statuses(report) == {"check": "cached", "simplify": "cached", "engine": "built"}


def test_int8_without_calibration_fails_validation(project, capsys):
    project.write_recipe(recipe_dict("conv.onnx", precision="int8"))
    from trtbuild.commands.cli import main

    assert main(["build", str(project.recipe), "--cache-dir", str(project.cache)]) == 2
    assert "engine.precision int8 needs precision.calibration" in capsys.readouterr().err


def test_accuracy_gate_failure_shows_table_and_stops_the_engine(project):
    write_calibration(project.root)
    project.write_recipe(quantized_recipe(max_relative_error=1e-9))
    code, report = project.build()
    assert code == 1
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["accuracy"]["status"] == "failed" and steps["engine"]["status"] == "skipped"
    assert "int8 model is less accurate than allowed" in steps["accuracy"]["error"]
    assert "rel L2 err" in steps["accuracy"]["error"]
    assert steps["accuracy"]["meta"]["accuracy"]["outputs"][0]["rel_l2"] > 1e-9


def test_keep_fp32_names_must_exist(project):
    data = recipe_dict("conv.onnx", precision="fp16")
    data["precision"] = {"keep_fp32": ["Softmax"]}
    project.write_recipe(data)
    code, report = project.build()
    assert code == 2
    assert "precision.keep_fp32: ['Softmax'] are neither op types nor node names" in report["steps"][2]["error"]


def test_keep_fp32_op_stays_float32(project):
    data = recipe_dict("conv.onnx", precision="fp16")
    data["precision"] = {"keep_fp32": ["Conv"]}
    project.write_recipe(data)
    code, report = project.build()
    assert code == 0, report
    model = onnx.load(report["steps"][2]["outputs"]["model.onnx"])
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weights = {i.name: i.data_type for i in model.graph.initializer}
    assert weights[conv.input[1]] == onnx.TensorProto.FLOAT


def test_bf16_without_modelopt_names_the_extra(project, capsys):
    import importlib.util

    import pytest

    if importlib.util.find_spec("modelopt") is not None:
        pytest.skip("ModelOpt is installed here, so bf16 is available")
    project.write_recipe(recipe_dict("conv.onnx", precision="bf16"))
    from trtbuild.commands.cli import main

    assert main(["build", str(project.recipe), "--cache-dir", str(project.cache)]) == 2
    assert "pip install --no-deps nvidia-modelopt" in capsys.readouterr().err


def test_bf16_gate_runs_bf16_models_as_rounded_fp32(tmp_path):
    """ONNX Runtime has no bf16 CPU kernels; the gate's rewrite must give exactly bf16's roundings."""
    import ml_dtypes
    from onnx import TensorProto, helper

    from trtbuild.steps.accuracy import _bf16_rounded_in_fp32
    from trtbuild.models.tensors import run_onnxruntime

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 8)).astype(ml_dtypes.bfloat16)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["r"]),
         helper.make_node("Cast", ["r"], ["out"], to=TensorProto.FLOAT)],
        "bf16", [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 8])], [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9), tmp_path / "m.onnx")
    x = rng.standard_normal((2, 4)).astype(np.float32)

    emulated = _bf16_rounded_in_fp32(tmp_path / "m.onnx", tmp_path / "emulated.onnx")
    _, [out] = run_onnxruntime(emulated, {"x": x}, optimize=False)

    def bf16(a):
        return a.astype(ml_dtypes.bfloat16).astype(np.float32)

    expected = bf16(np.maximum(bf16(x) @ w.astype(np.float32), 0))
    np.testing.assert_array_equal(out, expected)
    assert np.abs(out - np.maximum(x @ w.astype(np.float32), 0)).max() > 0  # really rounded, not fp32


def test_verify_judges_lossy_engines_against_fp32_by_relative_error(project):
    """verify needs a GPU, so only its wiring is checked here: what it compares, and by which rule."""
    from trtbuild.store.cache import Cache
    from trtbuild.planning.graph import compile_recipe
    from trtbuild.recipes.loader import load_recipe

    def verify_step(**engine):
        project.write_recipe(recipe_dict("conv.onnx", **engine))
        steps = compile_recipe(load_recipe(project.recipe), Cache(project.cache))
        return next(s for s in steps if s.name == "verify")

    fp16 = verify_step(precision="fp16")
    assert fp16.inputs["onnx"].name == "simplify"  # the fp32 model, not the fp16 one the engine came from
    assert fp16.params["max_relative_error"] == 0.01
    fp32 = verify_step()
    assert fp32.inputs["onnx"].name == "simplify" and fp32.params["max_relative_error"] is None
