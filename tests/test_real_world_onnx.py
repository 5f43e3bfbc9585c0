"""Third-party ONNX files: what exporters and graph tools leave behind builds when TensorRT builds it;
a model TensorRT cannot take fails with the parser's verdict; recipes need only what they set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from conftest import statuses
from trtbuild.commands.cli import main

pytestmark = pytest.mark.slow


def conv_graph(output: onnx.ValueInfoProto | None = None, name: str = "g", extra=(), outputs=None, **graph) -> onnx.GraphProto:
    """x[1,3,8,8] -> Conv(4) -> y (then `extra` nodes)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = output or helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    return helper.make_graph([conv, *extra], name, [x], outputs or [y], [w], **graph)


def model(graph: onnx.GraphProto, opset: int = 17, **kwargs) -> onnx.ModelProto:
    kwargs.setdefault("opset_imports", [helper.make_opsetid("", opset)])
    return helper.make_model(graph, ir_version=8, **kwargs)


def build(tmp_path: Path, onnx_model: onnx.ModelProto, **recipe) -> tuple[int, dict]:
    """A recipe with only name and source (plus `recipe`), built into a fresh cache."""
    onnx.save(onnx_model, tmp_path / "model.onnx")
    data = {"name": "third_party", "source": {"framework": "onnx", "path": "model.onnx"}, **recipe}
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    report = tmp_path / "report.json"
    code = main([str(tmp_path / "model.yaml"), "--cache-dir", str(tmp_path / "cache"), "--report", str(report)])
    return code, json.loads(report.read_text())


def step(report: dict, name: str) -> dict:
    return next(s for s in report["steps"] if s["step"] == name)


def untyped_shape_output() -> onnx.ValueInfoProto:
    value = onnx.ValueInfoProto(name="y")
    value.type.tensor_type.elem_type = TensorProto.FLOAT  # a type without a shape, as some tools write
    return value


OUT = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])
ADD_RELU = helper.make_function("custom", "AddRelu", ["a", "b"], ["c"],
                                [helper.make_node("Add", ["a", "b"], ["t"]), helper.make_node("Relu", ["t"], ["c"])],
                                [helper.make_opsetid("", 17)])
CHECKER_FAILURES = {
    # what onnx.checker / strict shape inference say -> a model TensorRT builds anyway
    "Field 'shape' of 'type' is required but missing": model(conv_graph(untyped_shape_output())),
    "Field 'name' of 'graph' is required to be non-empty": model(conv_graph(name="")),
    "Inferred shape and existing shape differ": model(conv_graph(
        extra=[helper.make_node("Dropout", ["y"], ["z", "mask"], name="drop"),
               helper.make_node("Sum", ["z", "y"], ["out"], name="sum")],
        outputs=[OUT], value_info=[helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 9])]), opset=12),
    "No opset import for domain 'custom'": model(
        conv_graph(extra=[helper.make_node("AddRelu", ["y", "y"], ["out"], name="fused", domain="custom")],
                   outputs=[OUT]), functions=[ADD_RELU]),
}


@pytest.mark.parametrize("complaint", list(CHECKER_FAILURES))
def test_what_only_the_checker_refuses_builds_with_a_warning(tmp_path, complaint, capsys):
    code, report = build(tmp_path, CHECKER_FAILURES[complaint])
    assert code == 0, report
    assert statuses(report)["engine"] == "built"
    warnings = step(report, "check")["meta"]["warnings"]
    assert any(complaint in w for w in warnings), warnings
    assert complaint in capsys.readouterr().err  # printed when the step ran


def test_custom_op_without_plugin_fails_with_the_parsers_verdict(tmp_path):
    graph = conv_graph(extra=[helper.make_node("MyOp", ["y"], ["out"], name="n1", domain="my.ops")], outputs=[OUT])
    code, report = build(tmp_path, model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                               helper.make_opsetid("my.ops", 1)]))
    assert code == 1
    assert statuses(report) == {"check": "built", "simplify": "built", "engine": "failed"}
    error = step(report, "engine")["error"]
    assert "node 'n1' (MyOp): no importer or plugin for op 'MyOp'" in error
    assert "checker" not in error
    assert any("'n1' (MyOp, domain 'my.ops')" in w for w in step(report, "check")["meta"]["warnings"])
    # ONNX Runtime cannot run it either: the simplified model is unchecked, and the report says so
    assert any("the simplified model was not checked: ONNX Runtime cannot run the model" in w
               for w in step(report, "simplify")["meta"]["warnings"])


def test_a_model_without_inputs_builds(tmp_path):
    constant = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.ones((2, 3), np.float32)))
    graph = helper.make_graph([constant, helper.make_node("Relu", ["k"], ["o"])], "consts", [],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2, 3])])
    code, report = build(tmp_path, model(graph))
    assert code == 0, report
    assert statuses(report)["engine"] == "built"


def test_static_inputs_come_from_the_model(tmp_path):
    code, report = build(tmp_path, model(conv_graph()))
    assert code == 0, report
    plan_info = json.loads(Path(step(report, "engine")["outputs"]["model.json"]).read_text())
    assert plan_info["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 8, 8]}]


def dynamic_model() -> onnx.ModelProto:
    graph = conv_graph()
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return model(graph)


def test_dynamic_dims_need_only_their_ranges(tmp_path):
    ranges = {"x": {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}}
    code, report = build(tmp_path, dynamic_model(), inputs=ranges)
    assert code == 0, report
    plan_info = json.loads(Path(step(report, "engine")["outputs"]["model.json"]).read_text())
    assert plan_info["inputs"][0] | {"name": "x"} == {"name": "x", "dtype": "float32", "shape": [-1, 3, 8, 8],
                                                      "min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}


def test_dynamic_dims_without_ranges_say_what_to_add(tmp_path):
    code, report = build(tmp_path, dynamic_model())
    assert code == 2
    error = step(report, "check")["error"]
    assert "model input 'x' has dynamic dims [-1, 3, 8, 8]" in error
    assert "inputs: {x: {min: [1, 3, 8, 8], opt: [1, 3, 8, 8], max: [1, 3, 8, 8]}}" in error


def test_a_fixed_dim_the_recipe_makes_dynamic_is_a_recipe_error(tmp_path):
    ranges = {"x": {"shape": [-1, 3, 8, 8], "min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}}
    code, report = build(tmp_path, model(conv_graph()), inputs=ranges)
    assert code == 2
    assert f"{tmp_path / 'model.yaml'}:6: inputs.x: dim 0 is fixed at 1 in the model, the recipe makes it dynamic" \
        in step(report, "check")["error"]


def test_a_dynamic_dim_may_be_fixed_by_the_recipe(tmp_path):
    code, report = build(tmp_path, dynamic_model(), inputs={"x": {"shape": [2, 3, 8, 8]}})
    assert code == 0, report
    plan_info = json.loads(Path(step(report, "engine")["outputs"]["model.json"]).read_text())
    assert plan_info["inputs"][0]["shape"] == [-1, 3, 8, 8]
    assert plan_info["inputs"][0]["min"] == plan_info["inputs"][0]["max"] == [2, 3, 8, 8]


def test_failed_step_log_holds_the_error(tmp_path):
    code, report = build(tmp_path, dynamic_model())
    log = Path(step(report, "check")["log"]).read_text()
    assert "Traceback" in log and "has dynamic dims" in log
