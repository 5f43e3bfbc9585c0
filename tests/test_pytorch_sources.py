"""PyTorch sources as they come: dict and tuple outputs, models torch.export refuses, ExportedPrograms,
checkpoints that do not fit, pickled models, wrong dtypes and weight downloads. Real torch.onnx
exports, ONNX Runtime parity and TensorRT-RTX plans."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import build_recipe, needs, nets_module, statuses
from pytorch_nets import ALL_BUILT, ENGINE, NETS, X, engine_outputs, export_error, line_of, write_recipe

torch = pytest.importorskip("torch")


@pytest.fixture
def nets(tmp_path, monkeypatch):
    yield from nets_module(NETS, tmp_path, monkeypatch)


build = build_recipe


@pytest.mark.slow
def test_dict_outputs_are_named_by_key(nets):
    code, report = build(write_recipe(nets, entrypoint="nets:TwoHeads"))
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    assert report["steps"][0]["meta"]["exporter"] == "dynamo"
    assert [r["output"] for r in report["steps"][2]["meta"]["parity"]["outputs"]] == ["seg", "cls"]
    assert engine_outputs(nets) == [("seg", [-1, 4, 16, 16]), ("cls", [-1, 5])]


@pytest.mark.slow
def test_recipe_outputs_pick_dict_entries_by_key(nets):
    code, report = build(write_recipe(nets, entrypoint="nets:TwoHeads", outputs=["cls", "seg"]))
    assert code == 0, report
    assert engine_outputs(nets) == [("cls", [-1, 5]), ("seg", [-1, 4, 16, 16])]
    rows = report["steps"][2]["meta"]["parity"]["outputs"]
    assert [(r["output"], r["shape"], r["ok"]) for r in rows] == [("cls", [2, 5], True), ("seg", [2, 4, 16, 16], True)]


@pytest.mark.slow
def test_recipe_outputs_pick_one_entry_of_a_dict_of_three(nets):
    code, report = build(write_recipe(nets, entrypoint="nets:ThreeHeads", outputs=["logits"]))
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    assert engine_outputs(nets) == [("logits", [-1, 5])]
    assert [r["output"] for r in report["steps"][2]["meta"]["parity"]["outputs"]] == ["logits"]


@pytest.mark.slow
def test_recipe_outputs_pick_and_order_tuple_outputs_by_their_names(nets):
    code, report = build(write_recipe(nets, entrypoint="nets:Nested", outputs=["output_1_1", "output_0"]))
    assert code == 0, report
    assert engine_outputs(nets) == [("output_1_1", [-1, 16, 16]), ("output_0", [-1, 4, 16, 16])]


@pytest.mark.parametrize("entrypoint, outputs, expected", [
    ("nets:TwoHeads", ["cls", "mask"], "'mask' is not an output of the model; it returns a dict with ['seg', 'cls']"),
    ("nets:TwoHeads", ["cls", "cls"], "'cls' is named twice; name each output once"),
    ("nets:Nested", ["a", "b"], "2 names for 3 outputs: the model returns a tuple of 3 tensors (output_0, output_1_0, "
                                "output_1_1): name them all (new names, by position), or pick some by those names"),
    ("nets:Single", ["a", "b"], "2 names for 1 outputs: the model returns one tensor (output)"),
])
def test_recipe_outputs_that_do_not_fit_the_model_exit_2(nets, entrypoint, outputs, expected):
    recipe = write_recipe(nets, entrypoint=entrypoint, outputs=outputs)
    code, report = build(recipe)
    assert code == 2
    error = export_error(report)
    assert error.startswith(f"{line_of(recipe, 'outputs:')}: source.outputs: ") and expected in error


def test_output_that_is_not_a_tensor_exits_2(nets):
    recipe = write_recipe(nets, entrypoint="nets:Counted")
    code, report = build(recipe)
    assert code == 2
    assert export_error(report).startswith(f"{line_of(recipe, 'source:')}: source: the model's output 'count' "
                                           "is of type int, not a tensor")


@pytest.mark.slow
@pytest.mark.parametrize("entrypoint, names, shapes", [
    ("nets:Single", ["output"], [[-1, 4, 16, 16]]),
    ("nets:Nested", ["output_0", "output_1_0", "output_1_1"], [[-1, 4, 16, 16], [-1, 5], [-1, 16, 16]]),
])
def test_default_output_names(nets, entrypoint, names, shapes):
    code, report = build(write_recipe(nets, entrypoint=entrypoint))
    assert code == 0, report
    assert report["steps"][1]["meta"]["outputs"] == names
    assert engine_outputs(nets) == list(zip(names, shapes))


@pytest.mark.slow
def test_model_dynamo_cannot_export_falls_back_to_torchscript(nets):
    code, report = build(write_recipe(nets, entrypoint="nets:Checked"))
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    meta = report["steps"][0]["meta"]
    assert meta["exporter"] == "torchscript"
    assert meta["fallback"].startswith("dynamo failed: ") and "data-dependent" in meta["fallback"]
    assert "torch.export" in Path(report["steps"][0]["log"]).read_text()  # dynamo's whole error


@pytest.mark.slow
def test_an_opset_dynamo_does_not_write_chooses_torchscript_before_exporting(nets):
    """dynamo implements opset 18 and up (it converts this model's ReduceMean to 17 no more than
    ResNet-50's): torchscript is chosen before any export runs, and dynamo's is never thrown away."""
    code, report = build(write_recipe(nets, opset=17, entrypoint="nets:TwoHeads", outputs=["cls", "seg"]))
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    meta = report["steps"][0]["meta"]
    assert meta["exporter"] == "torchscript" and meta["chosen"] == "opset 17: dynamo writes 18 and up"
    assert "fallback" not in meta and "Translate the graph into ONNX" not in Path(report["steps"][0]["log"]).read_text()
    assert report["steps"][1]["meta"]["opset"] == 17
    assert engine_outputs(nets) == [("cls", [-1, 5]), ("seg", [-1, 4, 16, 16])]


def test_the_torchscript_trace_gives_the_parity_reference_without_running_the_model_again(nets, tmp_path):
    """The trace runs the model on the example inputs: the reference on those inputs is its outputs,
    bit for bit what a forward pass gives; other inputs run the model."""
    from trtbuild.frontends import ModelSpec, pytorch
    from trtbuild.models.tensors import example_inputs

    inputs = {"x": {"dtype": "float32", "shape": [-1, 3, 16, 16], "opt": [2, 3, 16, 16]}}
    spec = ModelSpec(framework="pytorch", opset=17, inputs=inputs, entrypoint="nets:TwoHeads", exporter="torchscript",
                     python_path=[str(nets)])
    model = pytorch.load(spec)
    pytorch.export(model, spec, tmp_path / "model.onnx")
    runs = []
    model.register_forward_hook(lambda *_: runs.append(1))
    feeds = example_inputs(inputs, seed=0)
    reference = pytorch.predict(model, spec, feeds)
    assert runs == []  # taken from the trace
    with torch.no_grad():
        eager = model(torch.from_numpy(feeds["x"]))
    assert list(reference) == model.names
    assert all(np.array_equal(reference[n], t.numpy()) for n, t in zip(model.names, eager))
    runs.clear()
    pytorch.predict(model, spec, example_inputs(inputs, seed=1))
    assert runs == [1]  # other inputs: the model runs


def test_the_run_that_learns_the_outputs_gives_the_reference_on_the_same_inputs(nets):
    """Loading runs the model once (at opt here); predict() on those inputs takes that run's outputs,
    bit for bit what a forward pass gives, instead of running the model again."""
    from trtbuild.frontends import ModelSpec, pytorch
    from trtbuild.models.tensors import example_inputs

    inputs = {"x": {"dtype": "float32", "shape": [-1, 3, 16, 16], "opt": [1, 3, 16, 16]}}
    spec = ModelSpec(framework="pytorch", opset=18, inputs=inputs, entrypoint="nets:TwoHeads", python_path=[str(nets)])
    model = pytorch.load(spec)
    runs = []
    model.register_forward_hook(lambda *_: runs.append(1))
    feeds = example_inputs(inputs, seed=0)
    reference = pytorch.predict(model, spec, feeds)
    assert runs == []
    with torch.no_grad():
        eager = model(torch.from_numpy(feeds["x"]))
    assert all(np.array_equal(reference[n], t.numpy()) for n, t in zip(model.names, eager))
    runs.clear()
    pytorch.predict(model, spec, example_inputs(inputs, seed=1))
    assert runs == [1]


@pytest.mark.slow
def test_with_parity_off_the_export_spends_no_forward_pass_on_a_reference(nets):
    recipe = write_recipe(nets, entrypoint="nets:TwoHeads", outputs=["cls", "seg"])
    data = yaml.safe_load(recipe.read_text())
    recipe.write_text(yaml.safe_dump(data | {"parity": {"enabled": False}}))
    code, off = build(recipe)
    assert code == 0, off
    assert statuses(off) == {"export": "built", "check": "built", "simplify": "built", "engine": "built"}
    # no reference.npz; the dynamo exporter's graph is kept for weights-only rebuilds
    assert sorted(off["steps"][0]["outputs"]) == ["graph-template.onnx", "model.onnx"]
    recipe.write_text(yaml.safe_dump(data))
    code, on = build(recipe, "--dry-run")
    assert on["steps"][0]["status"] == "would-run" and "params.reference" in on["steps"][0]["reason"]
    code, on = build(recipe)  # the same ONNX model: only the export (for its reference) and parity run
    assert code == 0 and statuses(on) == ALL_BUILT | {"check": "cached", "simplify": "cached", "engine": "cached"}
    assert "reference.npz" in on["steps"][0]["outputs"]


@pytest.mark.slow
def test_exported_program_file_builds(nets):
    # torch.export in a process of its own: in one that has loaded TensorFlow (other tests), its
    # triton import crashes.
    save = ("import torch; from nets import TwoHeads; batch = torch.export.Dim('batch', min=1, max=4); "
            "torch.export.save(torch.export.export(TwoHeads().eval(), (torch.randn(2, 3, 16, 16),), "
            "dynamic_shapes=({0: batch},)), 'net.pt2')")
    subprocess.run([sys.executable, "-c", save], cwd=nets, check=True, env=os.environ | {"PYTHONPATH": str(nets)})
    code, report = build(write_recipe(nets, path="net.pt2", outputs=["cls", "seg"]))
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    assert report["steps"][0]["meta"]["exporter"] == "dynamo"
    assert engine_outputs(nets) == [("cls", [-1, 5]), ("seg", [-1, 4, 16, 16])]


def test_model_that_refuses_batch_1_is_run_at_opt_to_learn_its_outputs(nets):
    # what a model returns is learnt at batch 1 where the batch is dynamic; this one needs two samples
    x = {"shape": [-1, 8], "min": [2, 8], "opt": [4, 8], "max": [8, 8]}
    code, report = build(write_recipe(nets, x, entrypoint="nets:BatchStats"))
    export = report["steps"][0]
    assert export["status"] == "built", report
    assert "the model failed at batch 1" in Path(export["log"]).read_text()
    import onnx
    assert [o.name for o in onnx.load(nets / "cache" / "out" / "net" / "model.onnx").graph.output] == ["z"]


@pytest.mark.parametrize("opset", [None, 17])  # 17: torchscript exports, after torch.export has checked the dims
def test_a_dim_the_model_fixes_but_the_recipe_makes_dynamic_is_a_recipe_error(nets, opset):
    # torchscript would trace it at 16 and still call the width dynamic: a model wrong at other widths
    x = {"shape": [-1, 3, 16, -1], "min": [1, 3, 16, 8], "opt": [2, 3, 16, 16], "max": [4, 3, 16, 32]}
    recipe = write_recipe(nets, x, entrypoint="nets:WidthBound", **({"opset": opset} if opset else {}))
    code, report = build(recipe)
    assert code == 2
    # torch.export names it where it sees it (torch 2.14); on an older torch, or where it does not, the export
    # runs the model at min and max and compares it with PyTorch there (trtbuild.models.shape_runs)
    error = export_error(report)
    assert error.startswith(f"{line_of(recipe, 'x:')}: inputs.x: ") and "dim 3" in error and "\n" not in error
    assert error.endswith("16 in min, opt and max, or change the model so that it takes any size there")


def test_checkpoint_that_does_not_fit_names_the_keys(nets):
    from nets import Single

    state = Single().state_dict()
    state["conv.weight"] = torch.zeros(8, 3, 3, 3)
    del state["conv.bias"]
    state["head.weight"] = torch.zeros(2)
    torch.save(state, nets / "net.pt")
    recipe = write_recipe(nets, entrypoint="nets:Single", checkpoint="net.pt")
    code, report = build(recipe)
    assert code == 2
    assert export_error(report) == (
        f"{line_of(recipe, 'checkpoint:')}: source.checkpoint: net.pt does not fit the model: 1 key missing "
        "(conv.bias); 1 key unexpected (head.weight); 1 key with the wrong shape "
        "(conv.weight: [8, 3, 3, 3] in the checkpoint, [4, 3, 3, 3] in the model)")


@pytest.mark.parametrize("key", ["checkpoint", "path"])
def test_pickled_whole_model_says_to_save_the_state_dict(nets, key):
    from nets import Single

    torch.save(Single(), nets / "whole.pt")
    source = {"entrypoint": "nets:Single", "checkpoint": "whole.pt"} if key == "checkpoint" else {"path": "whole.pt"}
    recipe = write_recipe(nets, **source)
    code, report = build(recipe)
    assert code == 2
    error = export_error(report)
    assert error.startswith(f"{line_of(recipe, f'{key}: whole.pt')}: source.{key}: whole.pt is a pickled Python "
                            "object (nets.Single)")
    assert "model.state_dict()" in error and "torch.export.save" in error


def test_input_dtype_the_model_rejects(nets):
    recipe = write_recipe(nets, x=X | {"dtype": "int64"})
    code, report = build(recipe)
    assert code == 2
    error = export_error(report)
    assert error.startswith(f"{line_of(recipe, 'dtype:')}: inputs.x.dtype: the model rejects int64 input (")
    assert error.endswith("): the model expects float32")


def test_integer_inputs_the_model_rejects_name_the_fix_and_parity_data_gives_the_values(nets):
    ids = {"dtype": "int64", "shape": [-1, 8], "min": [1, 8], "opt": [2, 8], "max": [4, 8]}
    recipe = nets / "net.yaml"
    data = {"name": "net", "source": {"framework": "pytorch", "entrypoint": "nets:Tokens"},
            "inputs": {"input_ids": ids, "token_type_ids": ids}, "engine": ENGINE}
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    code, report = build(recipe)  # token_type_ids get zeros; input_ids 0..9, past the model's 5
    assert code == 2
    assert export_error(report).startswith(f"{line_of(recipe, 'inputs:')}: inputs: the model rejects the integer "
                                           "example values trtbuild makes for input_ids, token_type_ids (")
    np.savez(nets / "tokens.npz", input_ids=np.array([[0, 1, 2, 3, 4, 4, 3, 2]] * 2),
             token_type_ids=np.zeros((2, 8), np.int64))
    recipe.write_text(yaml.safe_dump(data | {"parity": {"data": "tokens.npz"}}, sort_keys=False))
    code, report = build(recipe)
    assert code == 0, report
    assert statuses(report) == ALL_BUILT


@pytest.mark.slow
def test_weights_download_names_the_url_and_the_fix(nets, monkeypatch):
    """torchvision's DeepLabV3 with weights: null still fetches ImageNet weights for its backbone."""
    needs("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(nets / "torch_home"))  # no copy downloaded before
    for proxy in ("https_proxy", "HTTPS_PROXY"):  # nothing listens there: no download, with or without a network
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    source = {"entrypoint": "torchvision.models.segmentation:deeplabv3_mobilenet_v3_large", "kwargs": {"weights": None}}
    recipe = write_recipe(nets, x={"shape": [1, 3, 64, 64]}, **source)
    code, report = build(recipe)
    assert code == 2
    error = export_error(report)
    assert error.startswith(f"{line_of(recipe, 'entrypoint:')}: source.entrypoint "
                            "'torchvision.models.segmentation:deeplabv3_mobilenet_v3_large' tried to download "
                            "https://download.pytorch.org/models/mobilenet_v3_large-")
    assert "weights_backbone: null" in error and "checkpoint:" in error
    # The fix it names builds; the model returns an OrderedDict {"out": ...}.
    source["kwargs"] |= {"weights_backbone": None, "num_classes": 3}
    code, report = build(write_recipe(nets, x={"shape": [1, 3, 64, 64]}, **source))
    assert code == 0, report
    assert engine_outputs(nets) == [("out", [1, 3, 64, 64])]


@pytest.mark.slow
def test_hugging_face_model_output_is_named_by_its_fields(nets):
    needs("transformers")
    (nets / "tiny_bert.py").write_text(TINY_BERT)
    recipe = write_recipe(nets, x={"dtype": "int64", "shape": [-1, 16], "min": [1, 16], "opt": [2, 16], "max": [4, 16]},
                          entrypoint="tiny_bert:build")
    code, report = build(recipe)
    assert code == 0, report
    assert engine_outputs(nets) == [("last_hidden_state", [-1, 16, 32]), ("pooler_output", [-1, 32])]


TINY_BERT = """
from transformers import BertConfig, BertModel


def build():
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return BertModel(config)
"""
