"""fp16 models whose last op must stay fp32 (a segmentation head's Resize): float32 I/O as the recipe
promises, and keep_fp32 adding to what the converter keeps instead of replacing it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import recipe_dict, statuses

pytestmark = pytest.mark.slow


def segmentation_head() -> onnx.ModelProto:
    """x[N,3,16,16] -> Conv -> Softmax over classes -> bilinear Resize x2 -> y[N,4,32,32], as U-Net and
    DeepLab heads end."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["c"], ["p"], name="softmax", axis=1),
             helper.make_node("Resize", ["p", "", "scales"], ["y"], name="upsample", mode="linear")]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4, 32, 32])], [w, scales])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _engine_io(report: dict) -> dict[str, str]:
    engine = next(s for s in report["steps"] if s["step"] == "engine")
    meta = json.loads(Path(engine["outputs"]["model.json"]).read_text())
    return {t["name"]: t["dtype"] for t in meta["inputs"] + meta["outputs"]}


def test_fp16_with_a_final_resize_keeps_float32_io(project):
    project.write_model(segmentation_head())
    project.write_recipe(recipe_dict("conv.onnx", precision="fp16"))
    code, report = project.build()
    assert code == 0, report
    model = onnx.load(next(s for s in report["steps"] if s["step"] == "precision")["outputs"]["model.onnx"])
    assert [v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]] == [TensorProto.FLOAT] * 2
    assert TensorProto.FLOAT16 in {i.data_type for i in model.graph.initializer}  # fp16 inside
    assert _engine_io(report) == {"x": "float32", "y": "float32"}


def test_keep_fp32_adds_to_what_the_converter_keeps(project):
    project.write_model(segmentation_head())
    data = recipe_dict("conv.onnx", precision="fp16")
    data["precision"] = {"keep_fp32": ["Softmax"]}  # the README's advice; Resize must stay fp32 as well
    project.write_recipe(data)
    code, report = project.build()
    assert code == 0, report
    assert statuses(report)["accuracy"] == "built" and statuses(report)["engine"] == "built"
    model = onnx.load(next(s for s in report["steps"] if s["step"] == "precision")["outputs"]["model.onnx"])
    by_name = {n.name: n for n in model.graph.node}
    inits = {i.name: i.data_type for i in model.graph.initializer}
    assert inits[by_name["upsample"].input[2]] == TensorProto.FLOAT  # Resize's scales stay float32
    assert _engine_io(report) == {"x": "float32", "y": "float32"}
