"""Large models in bounded memory: over TRTBUILD_SIMPLIFY_MAX_WEIGHTS (a few KiB here, so no file is
large) simplify passes the model's files through without loading its weights, the plan still builds
from them, and the report says why the model was not simplified."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import conv_model, recipe_dict, statuses
from trtbuild.models.onnx_io import copy_model_files


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def matmul_model(rows: int = 64, seed: int = 0) -> onnx.ModelProto:
    """x [N, rows] -> MatMul w [rows, rows] -> Add b -> y; a weight of rows * rows float32."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((rows, rows)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(rows).astype(np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", rows])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(path, x) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def large_project(project, rows: int = 64):
    project.write_model(matmul_model(rows), save_as_external_data=True, location="weights.bin", size_threshold=0)
    data = recipe_dict("conv.onnx")
    data["inputs"] = {"x": {"dtype": "float32", "shape": [-1, rows], "min": [1, rows], "opt": [2, rows],
                            "max": [4, rows]}}
    project.write_recipe(data)
    return project


def test_a_model_over_the_bound_is_built_as_given_and_the_report_says_why(project, monkeypatch):
    """A user's ONNX model whose files exceed the bound: simplify is skipped when the recipe is planned, and
    the engine reads the model where it is, so no copy of its weights enters the cache or out/."""
    monkeypatch.setenv("TRTBUILD_SIMPLIFY_MAX_WEIGHTS", "8KiB")  # the model's files hold 16.5 KiB
    large_project(project)
    code, report = project.build()
    assert code == 0, report
    assert statuses(report) == {"check": "built", "simplify": "skipped", "engine": "built"}
    simplify = next(s for s in report["steps"] if s["step"] == "simplify")
    assert simplify["reason"].startswith("simplify skipped: the model's files (0.0 MiB) exceed "
                                         "TRTBUILD_SIMPLIFY_MAX_WEIGHTS (0.0 MiB), over which onnx-simplifier")
    engine = next(s for s in report["steps"] if s["step"] == "engine")
    plan = project.cache / "out" / "conv" / engine["meta"]["target"] / "model.plan"
    assert plan.stat().st_size > 64 * 64 * 4  # the weights are in it
    weights = sha256(project.root / "weights.bin")
    assert not list((project.cache / "objects").glob(f"*/{weights}"))
    assert not (project.cache / "out" / "conv" / "model.onnx").exists()

    monkeypatch.setenv("TRTBUILD_SIMPLIFY_MAX_WEIGHTS", "1MiB")  # the bound decides what the engine is built from
    code, report = project.build()
    assert code == 0
    assert statuses(report) == {"check": "cached", "simplify": "built", "engine": "built"}
    simplify = next(s for s in report["steps"] if s["step"] == "simplify")
    assert simplify["meta"]["simplified"] is True and "skipped" not in simplify["meta"]


def test_an_exported_model_over_the_bound_passes_through_as_the_same_files(tmp_path, monkeypatch):
    """An upstream step's model (exported: its size is known only then) over the bound: the step links its
    files through unchanged, never loading the weights, so the cache stores them as the same objects."""
    from trtbuild.steps import Job, simplify

    monkeypatch.setenv("TRTBUILD_SIMPLIFY_MAX_WEIGHTS", "8KiB")  # the weights: 16.25 KiB
    scratch = tmp_path / "in-model"
    scratch.mkdir()
    (tmp_path / "out").mkdir()
    onnx.save(matmul_model(), scratch / "model.onnx", save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    inputs = {"x": {"dtype": "float32", "shape": [-1, 64], "opt": [2, 64]}}
    meta = simplify.run(Job("simplify", {"inputs": inputs, "check": "quick"}, {"model": scratch / "model.onnx"},
                            tmp_path / "out", {}))
    assert meta["simplified"] is False
    assert meta["skipped"].startswith("simplify skipped: the model's weights (0.0 MiB) exceed "
                                      "TRTBUILD_SIMPLIFY_MAX_WEIGHTS (0.0 MiB)")
    assert meta["warnings"] == [meta["skipped"]]
    for name in ("model.onnx", "model.onnx.data"):
        assert os.path.samefile(scratch / name, tmp_path / "out" / name)


def test_a_model_under_the_bound_is_simplified(project):
    code, report = project.build()
    assert code == 0
    simplify = next(s for s in report["steps"] if s["step"] == "simplify")
    assert simplify["meta"]["simplified"] is True and "skipped" not in simplify["meta"]


def test_a_bound_that_is_not_a_size_is_a_user_error(project, monkeypatch, capsys):
    monkeypatch.setenv("TRTBUILD_SIMPLIFY_MAX_WEIGHTS", "lots")
    from trtbuild.commands.cli import main

    assert main(["build", str(project.recipe), "--cache-dir", str(project.cache)]) == 2
    err = capsys.readouterr().err
    assert "TRTBUILD_SIMPLIFY_MAX_WEIGHTS='lots': expected a size such as 512MiB, 4GiB or a number of bytes" in err
    assert "Traceback" not in err


def test_files_already_laid_out_as_the_cache_does_are_linked_unchanged(tmp_path):
    """An upstream step's output (model.onnx + model.onnx.data) passes through as the same bytes, hard
    linked from the step's scratch: the cache stores no second copy of it."""
    source, out = tmp_path / "in" / "model.onnx", tmp_path / "out" / "model.onnx"
    source.parent.mkdir()
    out.parent.mkdir()
    onnx.save(matmul_model(), source, save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    copy_model_files(source, onnx.load(str(source), load_external_data=False), out, link=True)
    for name in ("model.onnx", "model.onnx.data"):
        assert os.path.samefile(source.parent / name, out.parent / name)


def test_weights_spread_over_files_are_gathered_into_one(tmp_path):
    """A user's model whose tensors lie in several files (at offsets) becomes model.onnx + model.onnx.data,
    computing the same, and the source is copied, never linked (the cache makes its objects read-only)."""
    model = matmul_model(32)
    source = tmp_path / "in" / "net.onnx"
    source.parent.mkdir()
    for i, tensor in enumerate(model.graph.initializer):
        onnx.external_data_helper.set_external_data(tensor, f"part{i}.bin", offset=16)
        (source.parent / f"part{i}.bin").write_bytes(b"\0" * 16 + tensor.raw_data)
        tensor.ClearField("raw_data")
    onnx.save(model, source)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    copy_model_files(source, onnx.load(str(source), load_external_data=False), out, link=False)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert (out.parent / "model.onnx.data").stat().st_size == 32 * 32 * 4 + 32 * 4
    assert all(os.stat(p).st_nlink == 1 for p in source.parent.iterdir())
    x = np.random.default_rng(2).standard_normal((3, 32)).astype(np.float32)
    np.testing.assert_array_equal(run(out, x), run(source, x))


def test_a_model_without_external_data_is_copied_as_is(tmp_path):
    source = tmp_path / "conv.onnx"
    onnx.save(conv_model(), source)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    copy_model_files(source, onnx.load(str(source), load_external_data=False), out, link=False)
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]
    assert sha256(out) == sha256(source)


@pytest.mark.parametrize("streamed", [True, False])
def test_the_plan_is_written_as_the_builder_makes_it(tmp_path, streamed, monkeypatch):
    """build_serialized_network_to_stream writes the plan to its file in pieces (never held whole), with the
    digest taken on the way; a backend without it writes the plan it returns. Both give the same plan."""
    from trtbuild.backends.engine import build_engine
    from trtbuild.backends.target import Target
    from trtbuild.store import hashing

    trt = pytest.importorskip("tensorrt_rtx")
    if not streamed:
        monkeypatch.delattr(trt.Builder, "build_serialized_network_to_stream")
    onnx.save(matmul_model(64), tmp_path / "mm.onnx")
    plan = tmp_path / "model.plan"
    hashing.written.clear()
    profiles = [{"name": None, "inputs": {"x": {"min": [1, 64], "opt": [2, 64], "max": [4, 64]}}}]
    meta = build_engine(tmp_path / "mm.onnx", plan, Target("tensorrt-rtx", trt.__version__, ()), profiles, 1 << 28, 0, None)
    assert meta["plan_bytes"] == plan.stat().st_size > 64 * 64 * 4
    assert hashing.written[str(plan)]["digest"] == sha256(plan)
