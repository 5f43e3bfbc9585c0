"""simplify's check: one run of each model at batch 1 proves the rewrite; a changed output is caught."""

from __future__ import annotations

import onnx
import pytest
from onnx import numpy_helper

from conftest import conv_model, recipe_dict
from trtbuild.steps.simplify import quick_check

INPUTS = {"x": {"dtype": "float32", "shape": [-1, 3, 16, 16], "opt": [4, 3, 16, 16]}}


def test_the_quick_check_passes_a_faithful_model_at_batch_1(tmp_path):
    onnx.save(conv_model(), tmp_path / "a.onnx")
    onnx.save(conv_model(), tmp_path / "b.onnx")
    note = quick_check(tmp_path / "a.onnx", tmp_path / "b.onnx", INPUTS)
    assert note.startswith("outputs compared with the original on ONNX Runtime once (x [1, 3, 16, 16];")


def test_the_quick_check_catches_one_changed_constant(tmp_path):
    onnx.save(conv_model(), tmp_path / "original.onnx")
    tampered = conv_model()
    weights = next(i for i in tampered.graph.initializer if i.name == "w")
    changed = numpy_helper.to_array(weights).copy()
    changed.flat[0] += 0.5
    weights.CopyFrom(numpy_helper.from_array(changed, "w"))
    onnx.save(tampered, tmp_path / "simplified.onnx")
    with pytest.raises(ValueError, match="the simplified model's output 'y' differs from the original's"):
        quick_check(tmp_path / "original.onnx", tmp_path / "simplified.onnx", INPUTS)


def test_a_thorough_check_is_a_recipe_switch(project):
    data = recipe_dict("conv.onnx")
    data["onnx"]["simplify_check"] = "thorough"
    project.write_recipe(data)
    code, report = project.build()
    assert code == 0
    simplify = next(s for s in report["steps"] if s["step"] == "simplify")
    assert simplify["meta"]["verification"] == "onnx-simplifier's check: 3 random inputs at the opt shapes"
    project.write_recipe(recipe_dict("conv.onnx"))
    code, report = project.build()
    simplify = next(s for s in report["steps"] if s["step"] == "simplify")
    assert simplify["status"] == "built" and simplify["reason"] == "params.check: thorough -> quick"
    note = simplify["meta"]["verification"]
    assert note.startswith("outputs compared with the original on ONNX Runtime once (x [1, 3, 16, 16]; max abs diff ")
    assert float(note.rsplit("diff ", 1)[1].rstrip(")")) < 1e-4  # BatchNorm folded into the Conv: float noise
