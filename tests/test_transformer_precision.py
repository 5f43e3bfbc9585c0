"""fp16 and int8 for Hugging Face transformers built from their configs; calibration on all the data given;
parity that warns when it compares nothing; a node the backend cannot import refused at check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import build_recipe, needs, recipe_dict, statuses

HF_MODELS = '''
import torch
import transformers


class LastHiddenState(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    return LastHiddenState(transformers.BertModel(config)).eval()


def t5():
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2)
    return LastHiddenState(transformers.T5EncoderModel(config)).eval()
'''


def hf_recipe(root: Path, model: str, precision: str, extra: dict | None = None) -> Path:
    (root / "hf_models.py").write_text(HF_MODELS)
    tokens = {"dtype": "int64", "min": [1, 4], "opt": [2, 16], "max": [4, 32]}  # a dynamic sequence length too
    recipe = {"name": model, "source": {"framework": "pytorch", "entrypoint": f"hf_models:{model}"},
              "inputs": {"input_ids": tokens, "attention_mask": dict(tokens)},
              "engine": {"backend": "tensorrt-rtx", "precision": precision, "workspace": "256MiB",
                         "optimization_level": 0}} | (extra or {})
    path = root / f"{model}.yaml"
    path.write_text(json.dumps(recipe))
    return path


def step(report: dict, name: str) -> dict:
    return next(s for s in report["steps"] if s["step"] == name)


def token_shards(folder: Path, count: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        np.savez(folder / f"shard{i:02d}.npz", input_ids=rng.integers(0, 100, (2, 16)), attention_mask=np.ones((2, 16), np.int64))


def gate_error(report: dict) -> float:
    [row] = step(report, "accuracy")["meta"]["accuracy"]["outputs"]
    return row["rel_l2"]


@pytest.mark.slow
def test_fp16_and_int8_bert_build_and_pass_the_gate_int8_on_all_20_calibration_files(tmp_path):
    needs("transformers")
    code, report = build_recipe(hf_recipe(tmp_path, "bert", "fp16"))
    assert code == 0, report
    assert set(statuses(report).values()) == {"built"}
    model = onnx.load(step(report, "precision")["outputs"]["model.onnx"])
    assert TensorProto.FLOAT16 in {i.data_type for i in model.graph.initializer}
    assert gate_error(report) < 0.01

    token_shards(tmp_path / "calib", 20)
    recipe = hf_recipe(tmp_path, "bert", "int8", {"precision": {"calibration": {"data": "calib/*.npz"}}})
    code, report = build_recipe(recipe)
    assert code == 0, step(report, "precision").get("error") or step(report, "engine").get("error")
    assert step(report, "export")["status"] == "cached"  # the fp16 build's export
    assert step(report, "engine")["status"] == "built"
    precision = step(report, "precision")["meta"]
    assert precision["calibration"] == {"batches": 20, "samples": 40, "batches_asked": None,
                                        "shapes": {"attention_mask": [[2, 2], [16, 16]], "input_ids": [[2, 2], [16, 16]]}}
    assert precision["quantize_nodes"] > 0
    assert gate_error(report) < 0.1
    # BERT's Range stops ONNX Runtime's symbolic shape inference, which saves its partial model into the
    # working directory: that must stay the step's scratch folder, not the user's.
    assert "without symbolic shape inference" in precision["warnings"][0]
    assert not (Path.cwd() / "sym_shape_infer_temp.onnx").exists()


@pytest.mark.slow
def test_fp16_t5_encoder_is_a_valid_model_and_builds(tmp_path):
    """onnxconverter-common made T5's relative-position Cast disagree with its value_info: ONNX Runtime
    refused the model. The precision step now loads what it makes before calling it built."""
    needs("transformers")
    code, report = build_recipe(hf_recipe(tmp_path, "t5", "fp16"))
    assert code == 0, step(report, "precision").get("error") or step(report, "accuracy").get("error")
    assert step(report, "engine")["status"] == "built"
    assert step(report, "precision")["meta"]["converter"] in ("ort-float16", "modelopt")
    assert gate_error(report) < 0.01


def test_an_invalid_conversion_fails_the_precision_step_with_the_node_and_the_fix(tmp_path):
    from trtbuild.errors import StepError
    from trtbuild.models import float16

    x = helper.make_tensor_value_info("x", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2])  # what a converter rewrote; the Cast still says fp32
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], name="to_float", to=TensorProto.FLOAT)],
                              "bad", [x], [y])
    bad = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), bad)
    with pytest.raises(StepError, match=r"invalid model: .*Keep that node in fp32 with precision.keep_fp32: "
                                        r"\[to_float\] \(or the op type: \[Cast\]\)"):
        float16.validate(bad, bad, "fp16")


def test_calibration_reads_all_files_unless_batches_limits_it_and_keys_only_what_it_read(project, capsys):
    (project.root / "calib").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        np.save(project.root / "calib" / f"b{i}.npy", rng.standard_normal((2, 3, 16, 16)).astype(np.float32))
    data = recipe_dict("conv.onnx", precision="int8")
    data["precision"] = {"calibration": {"data": "calib/*.npy"}, "max_relative_error": 10.0}
    project.write_recipe(data)
    code, report = project.build()
    assert code == 0
    assert step(report, "precision")["meta"]["calibration"]["batches"] == 5
    assert "warnings" not in step(report, "precision")["meta"]

    data["precision"]["calibration"]["batches"] = 3
    project.write_recipe(data)
    code, report = project.build()
    assert code == 0
    meta = step(report, "precision")["meta"]
    assert meta["calibration"] == {"batches": 3, "samples": 6, "batches_asked": 3,
                                   "shapes": {"x": [[2, 2], [3, 3], [16, 16], [16, 16]]}}
    assert "2 file(s) the glob matches were not used (remove `batches`" in meta["warnings"][0]
    assert "were not used" in capsys.readouterr().err
    np.save(project.root / "calib" / "b4.npy", np.zeros((2, 3, 16, 16), np.float32))  # never read: not keyed
    code, report = project.build()
    assert code == 0 and step(report, "precision")["status"] == "cached"
    np.save(project.root / "calib" / "b0.npy", np.ones((2, 3, 16, 16), np.float32))  # read: keyed
    code, report = project.build()
    assert code == 0 and step(report, "precision")["status"] == "built"


def test_a_glob_of_images_is_a_recipe_error_that_points_at_loader(project, capsys):
    (project.root / "calib").mkdir()
    for i in range(3):
        (project.root / "calib" / f"img{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    data = recipe_dict("conv.onnx", precision="int8")
    data["precision"] = {"calibration": {"data": "calib/*"}}
    project.write_recipe(data)
    code, _ = project.build()
    assert code == 2
    error = capsys.readouterr().err
    line = next(i for i, text in enumerate(project.recipe.read_text().splitlines(), 1) if "data: calib/*" in text)
    assert f"conv.yaml:{line}: precision.calibration.data: img0.png is not a .npy or .npz file" in error
    assert "precision.calibration.loader: 'module:callable'" in error


HEADS = '''
import torch


class Heads(torch.nn.Module):
    """A score map, and what a detector gives on noise: no boxes, a count of zero."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return {"scores": y, "boxes": y[:, :0].flatten(1), "count": torch.relu(-y.abs()).sum((1, 2, 3))}


def build():
    torch.manual_seed(0)
    return Heads().eval()
'''


@pytest.mark.slow
def test_parity_warns_on_empty_and_all_zero_outputs_and_switching_it_off_rebuilds_nothing_after_the_export(
        tmp_path, capsys):
    (tmp_path / "heads.py").write_text(HEADS)
    recipe = {"name": "heads", "source": {"framework": "pytorch", "entrypoint": "heads:build"},
              "inputs": {"x": {"shape": [1, 3, 8, 8]}},
              "engine": {"backend": "tensorrt-rtx", "optimization_level": 0, "workspace": "256MiB"}}
    path = tmp_path / "heads.yaml"
    path.write_text(json.dumps(recipe))
    code, report = build_recipe(path)
    assert code == 0, report
    warnings = step(report, "parity")["meta"]["warnings"]
    assert len(warnings) == 2
    assert "output 'boxes' is empty ([1, 0])" in warnings[0] and "parity.data" in warnings[0]
    assert "output 'count' is all zero ([1])" in warnings[1]
    assert "output 'boxes' is empty" in capsys.readouterr().err
    rows = {r["output"]: r for r in step(report, "parity")["meta"]["parity"]["outputs"]}
    assert rows["boxes"]["mismatched"] == "0/0"

    # Off, the export computes no reference (it reruns for that), and its ONNX model is the same: nothing after it rebuilds.
    path.write_text(json.dumps(recipe | {"parity": {"enabled": False}}))
    code, report = build_recipe(path)
    assert code == 0
    assert step(report, "export")["status"] == "built" and "reference.npz" not in step(report, "export")["outputs"]
    assert {s["step"]: s["status"] for s in report["steps"] if s["step"] in ("check", "simplify", "engine")} == {
        "check": "cached", "simplify": "cached", "engine": "cached"}
    assert not any(s["step"] == "parity" for s in report["steps"])


def test_parity_passes_float_noise_on_relative_l2_and_takes_per_output_tolerances():
    from trtbuild.models.tensors import compare

    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 800, (300, 4)).astype(np.float32)
    boxes.flat[[5, 700]] = 0.5, 1.0  # box corners at the image's edge
    moved = boxes.copy()
    moved.flat[[5, 700]] += 6e-3  # RetinaNet's 2 of 1200 values, off by 6e-3 px
    [strict] = compare(["boxes"], [boxes], [moved], atol=1e-4, rtol=1e-3)
    assert not strict["ok"] and strict["mismatched"] == "2/1200"
    [noise] = compare(["boxes"], [boxes], [moved], atol=1e-4, rtol=1e-3, rel_l2_passes=1e-5)
    assert noise["ok"] and noise["rel_l2"] < 1e-5
    wrong = boxes.copy()
    wrong[:, 0] += 5.0  # a real difference fails either way
    [real] = compare(["boxes"], [boxes], [wrong], atol=1e-4, rtol=1e-3, rel_l2_passes=1e-5)
    assert not real["ok"]
    [loose] = compare(["boxes"], [boxes], [moved], atol=1e-4, rtol=1e-3, per_output={"boxes": {"atol": 1e-2}})
    assert loose["ok"] and loose["mismatched"] == "0/1200"


def nonzero_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="scores"),
             helper.make_node("NonZero", ["r"], ["found"], name="find_boxes"),
             helper.make_node("Transpose", ["found"], ["y"], name="boxes", perm=[1, 0])]
    graph = helper.make_graph(nodes, "nonzero", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_node_the_backend_cannot_import_fails_at_check_with_the_node_and_the_fix(project):
    project.write_model(nonzero_model())
    data = recipe_dict("conv.onnx")
    del data["inputs"]
    project.write_recipe(data)
    code, report = project.build()
    assert code == 1
    check = step(report, "check")
    assert check["status"] == "failed"
    assert "node 'find_boxes' (NonZero): tensorrt-rtx cannot import it (NonZero plugin" in check["error"]
    assert "export the model without it" in check["error"] and "targets: [tensorrt]" in check["error"]
    assert step(report, "engine")["status"] == "skipped"


def test_an_op_the_backend_parses_but_cannot_build_is_a_warning_at_check(project):
    """TensorRT-RTX parses NonMaxSuppression and then has no kernel for it: the check says so, naming the
    node; the builder stays the judge (the engine step fails with the same fix)."""
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 8, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 8])
    keep = helper.make_tensor_value_info("keep", TensorProto.INT64, None)
    limit = helper.make_tensor("limit", TensorProto.INT64, [1], [4])
    graph = helper.make_graph([helper.make_node("NonMaxSuppression", ["boxes", "scores", "limit"], ["keep"], name="nms")],
                              "nms", [boxes, scores], [keep], [limit])
    project.write_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    data = recipe_dict("conv.onnx")
    del data["inputs"]
    data["onnx"]["simplify"] = False
    project.write_recipe(data)
    code, report = project.build()
    assert code == 1
    warnings = step(report, "check")["meta"]["warnings"]
    assert any("node 'nms' (NonMaxSuppression): tensorrt-rtx parses it but its builder has no implementation" in w
               for w in warnings), warnings
    assert "has no runners" in step(report, "engine")["error"]
    assert "export the model without it" in step(report, "engine")["error"]
