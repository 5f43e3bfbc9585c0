"""simplify's check: one run of each model at batch 1 proves the rewrite; a changed output is caught."""

from __future__ import annotations

import numpy as np
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


def pairs_model():
    """x [N, 4] -> Reshape [-1, 8]: N must be even, so batch 1 is outside any profile it has."""
    from onnx import TensorProto, helper

    shape = numpy_helper.from_array(np.array([-1, 8], "int64"), "shape")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "pairs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_model_that_cannot_run_at_batch_1_is_checked_at_opt(tmp_path):
    onnx.save(pairs_model(), tmp_path / "a.onnx")
    onnx.save(pairs_model(), tmp_path / "b.onnx")
    inputs = {"x": {"dtype": "float32", "shape": [-1, 4], "opt": [2, 4]}}
    note = quick_check(tmp_path / "a.onnx", tmp_path / "b.onnx", inputs)
    assert note.startswith("outputs compared with the original on ONNX Runtime once (x [2, 4];")


def test_a_rank_1_input_is_a_length_not_a_batch(tmp_path):
    from trtbuild.models.tensors import at_batch_one

    wave = {"dtype": "float32", "shape": [-1], "opt": [16000]}
    assert at_batch_one({"wave": wave, "x": INPUTS["x"]}) == {"wave": wave, "x": INPUTS["x"] | {"opt": [1, 3, 16, 16]}}


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
    assert float(note.split("max abs diff ", 1)[1].split(",")[0]) < 1e-4  # BatchNorm folded into the Conv: float noise
    assert float(note.rsplit("relative L2 error ", 1)[1].rstrip(")")) < 1e-5



def simplify_job(tmp_path, check: str):
    from trtbuild.steps import Job

    onnx.save(conv_model(), tmp_path / "model.onnx")
    (tmp_path / "out").mkdir()
    return Job("simplify", {"inputs": INPUTS, "check": check}, {"model": tmp_path / "model.onnx"}, tmp_path / "out", {})


def test_a_simplified_model_that_computes_something_else_fails_the_step(tmp_path, monkeypatch):
    """onnx-simplifier with a bug: the real simplify, then one weight of its result changed (a wrong
    rewrite cannot be asked of the real one). The quick check catches it and the step fails."""
    import onnxsim

    from trtbuild.errors import StepError
    from trtbuild.steps import simplify

    real = onnxsim.simplify

    def buggy(model, *args, **kwargs):
        simplified, same = real(model, *args, **kwargs)
        weights = next(i for i in simplified.graph.initializer if numpy_helper.to_array(i).ndim == 4)
        changed = numpy_helper.to_array(weights).copy()
        changed.flat[0] += 0.5
        weights.CopyFrom(numpy_helper.from_array(changed, weights.name))
        return simplified, same

    monkeypatch.setattr(onnxsim, "simplify", buggy)
    job = simplify_job(tmp_path, "quick")
    with pytest.raises(StepError, match="output 'y' differs from the original's .* `onnx: {simplify: false}`"):
        simplify.run(job)


def test_a_thorough_check_that_finds_a_difference_fails_the_step(tmp_path, monkeypatch):
    import onnxsim

    from trtbuild.errors import StepError
    from trtbuild.steps import simplify

    real = onnxsim.simplify
    monkeypatch.setattr(onnxsim, "simplify", lambda model, *a, **k: (real(model, *a, **k)[0], False))
    with pytest.raises(StepError, match="outputs differ from the original's"):
        simplify.run(simplify_job(tmp_path, "thorough"))


def test_a_simplification_that_grows_the_weights_keeps_the_model_as_given(project):
    """onnx-simplifier folds ConstantOfShape into a full initializer (VGG-19 of onnx's light models: a
    2 MB model became a 514 MB plan): the engine is built from the smaller model, with a warning."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([1024, 512], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["w"], name="fill",
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "fill", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 512])], [shape])
    project.write_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    data = recipe_dict("conv.onnx")
    data["inputs"] = {"x": {"dtype": "float32", "shape": [-1, 1024], "min": [1, 1024], "opt": [2, 1024],
                            "max": [4, 1024]}}
    project.write_recipe(data)
    code, report = project.build()
    assert code == 0
    simplify = next(s for s in report["steps"] if s["step"] == "simplify")
    assert simplify["meta"]["simplified"] is False
    assert simplify["meta"]["warnings"] == ["onnx-simplifier folded constants into weights (0.0 MiB -> 2.0 MiB); "
                                            "the engine is built from the smaller model as given"]
    published = project.cache / "out" / "conv" / "model.onnx"
    assert published.stat().st_size < 10_000
    assert [n.op_type for n in onnx.load(str(published)).graph.node] == ["ConstantOfShape", "MatMul"]

def test_float_reassociation_past_atol_is_not_a_changed_model(tmp_path):
    """A rewrite that moves elements past atol 1e-5 (folding a Mul into Conv weights does) while the output
    stays within float32 noise as a whole passes; one changed constant (above) still fails."""
    from trtbuild.models.tensors import example_inputs, run_onnxruntime

    onnx.save(conv_model(), tmp_path / "original.onnx")
    rewritten = conv_model()
    weights = next(i for i in rewritten.graph.initializer if i.name == "w")
    nudged = numpy_helper.to_array(weights).copy()
    nudged.flat[0] *= 1 + 1e-4  # what a reassociated product leaves in one weight
    weights.CopyFrom(numpy_helper.from_array(nudged, "w"))
    onnx.save(rewritten, tmp_path / "simplified.onnx")
    feeds = example_inputs({"x": INPUTS["x"] | {"opt": [1, 3, 16, 16]}}, seed=0)
    [want] = run_onnxruntime(tmp_path / "original.onnx", feeds, optimize=False)[1]
    [have] = run_onnxruntime(tmp_path / "simplified.onnx", feeds, optimize=False)[1]
    assert not np.allclose(have, want, rtol=1e-4, atol=1e-5)  # elementwise, this is a difference
    note = quick_check(tmp_path / "original.onnx", tmp_path / "simplified.onnx", INPUTS)
    assert float(note.rsplit("relative L2 error ", 1)[1].rstrip(")")) < 1e-5
