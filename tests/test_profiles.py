"""Several optimization profiles in one engine (`profiles:`): recipe errors at their line, real
TensorRT-RTX builds with two profiles (a small ONNX model and a tiny BERT), metadata, repro, keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import yaml

from conftest import build_recipe, needs, statuses
from helpers import LONG, SHORT, seq_model, seq_recipe
from trtbuild.commands.cli import main


@pytest.fixture
def seq(tmp_path) -> Path:
    onnx.save(seq_model(), tmp_path / "seq.onnx")
    recipe = tmp_path / "seq.yaml"
    recipe.write_text(yaml.safe_dump(seq_recipe(short=SHORT, long=LONG), sort_keys=False, default_flow_style=None))
    return recipe


def line_of(recipe: Path, text: str, nth: int = 1) -> str:
    """"seq.yaml:7" for the nth line of the recipe holding `text`."""
    hits = [i for i, line in enumerate(recipe.read_text().splitlines(), 1) if line.strip(" -").startswith(text)]
    return f"{recipe}:{hits[nth - 1]}"


def recipe_error(recipe: Path, capsys) -> str:
    capsys.readouterr()
    code = main(["build", str(recipe), "--cache-dir", str(recipe.parent / "cache"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


def edit(recipe: Path, change) -> None:
    data = yaml.safe_load(recipe.read_text())
    change(data)
    recipe.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))


def test_a_profile_missing_a_dynamic_input_is_an_error_at_its_line(seq, capsys):
    edit(seq, lambda d: d["profiles"][1]["inputs"].update({"y": d["profiles"][1]["inputs"].pop("x")}))
    err = recipe_error(seq, capsys)
    assert f"{line_of(seq, 'inputs:', 3)}: profiles[1] (long): inputs: missing x (every profile gives every dynamic " \
           "input its min / opt / max)" in err


def test_min_above_max_in_a_profile_is_an_error_at_its_line(seq, capsys):
    edit(seq, lambda d: d["profiles"][1]["inputs"]["x"].update({"min": [1, 300, 8]}))
    err = recipe_error(seq, capsys)
    assert f"{line_of(seq, 'x:', 3)}: profiles[1].inputs.x: dim 1 needs min <= opt <= max, got min=300 opt=128 max=256" in err


def test_a_profile_that_changes_a_fixed_dim_is_an_error_at_its_line(seq, capsys):
    edit(seq, lambda d: d["profiles"][0]["inputs"]["x"].update({"max": [4, 64, 16]}))
    err = recipe_error(seq, capsys)
    assert (f"{line_of(seq, 'x:', 2)}: profiles[0] (short): inputs.x: dim 2 is fixed at 8 by inputs.x.shape, but the "
            "profile gives min=8 opt=8 max=16") in err


def test_profiles_with_ranges_in_inputs_too_or_two_names_alike_are_errors(seq, capsys):
    edit(seq, lambda d: d["inputs"]["x"].update({"min": [1, 1, 8], "opt": [1, 1, 8], "max": [1, 1, 8]}))
    assert (f"{line_of(seq, 'min:')}: inputs.x.min: with profiles, each profile gives the ranges "
            "(profiles[i].inputs.x); keep only dtype and shape here") in recipe_error(seq, capsys)
    edit(seq, lambda d: (d["inputs"]["x"].clear(), d["inputs"]["x"].update({"shape": [-1, -1, 8]}),
                         d["profiles"][1].update({"name": "short"})))
    assert (f"{line_of(seq, 'name: short', 2)}: profiles[1].name: 'short' is also the name of profiles[0]; give each "
            "profile its own name") in recipe_error(seq, capsys)


def test_a_dynamic_shape_without_ranges_or_profiles_is_an_error_at_its_line(seq, capsys):
    edit(seq, lambda d: d.pop("profiles"))
    assert (f"{line_of(seq, 'shape:')}: inputs.x.shape: shape [-1, -1, 8] has dynamic dims (-1): add min, opt and max "
            "(one value per dim), or list optimization profiles under profiles") in recipe_error(seq, capsys)


@pytest.mark.slow
def test_two_profiles_build_one_engine_listed_by_index_and_name(seq):
    code, report = build_recipe(seq)
    assert code == 0, report
    engine = next(s for s in report["steps"] if s["step"] == "engine")
    expected = [{"index": 0, "name": "short", "inputs": {"x": SHORT}}, {"index": 1, "name": "long", "inputs": {"x": LONG}}]
    assert engine["meta"]["profiles"] == expected
    meta = json.loads((seq.parent / "cache" / "out" / "seq" / engine["target"] / "model.json").read_text())
    assert meta["profiles"] == expected
    # the first profile's ranges describe the input, as for a one-profile engine
    assert meta["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, -1, 8]} | SHORT]

    # The repro script runs the engine step again: the same two profiles in a new plan.
    assert main(["repro", str(seq), "engine", "--cache-dir", str(seq.parent / "cache")]) == 0
    script = next((seq.parent / "cache" / "repro" / "seq").glob("engine-*/repro.py"))
    run = subprocess.run([sys.executable, str(script)], cwd=script.parent, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads((script.parent / "model.json").read_text())["profiles"] == expected
    assert (script.parent / "model.plan").stat().st_size > 0

    # A new max in the second profile rebuilds the engine alone, and the reason names the profile.
    edit(seq, lambda d: d["profiles"][1]["inputs"]["x"].update({"max": [8, 384, 8]}))
    code, report = build_recipe(seq)
    assert code == 0, report
    assert statuses(report) == {"check": "cached", "simplify": "cached", "engine": "built"}
    engine = next(s for s in report["steps"] if s["step"] == "engine")
    assert "params.profiles[1].inputs.x.max: [8, 256, 8] -> [8, 384, 8]" in engine["reason"]
    assert engine["meta"]["profiles"][1]["inputs"]["x"]["max"] == [8, 384, 8]

    # The verify step (it needs a GPU) is planned at each profile's opt shapes.
    verify = next(s for s in report["steps"] if s["step"] == "verify")
    assert verify["status"] == "skipped"


def test_verify_and_accuracy_read_each_profiles_opt_only(seq, tmp_path):
    from trtbuild.planning.graph import compile_recipe
    from trtbuild.recipes.loader import load_recipe
    from trtbuild.store.cache import Cache

    edit(seq, lambda d: d["engine"].update({"precision": "fp16"}))
    steps = {s.name: s for s in compile_recipe(load_recipe(seq), Cache(tmp_path / "cache"))}
    opts = [{"name": "short", "opt": {"x": [1, 16, 8]}}, {"name": "long", "opt": {"x": [2, 128, 8]}}]
    assert steps["verify"].params["profiles"] == opts
    assert steps["accuracy"].params["profiles"] == opts
    # the steps that run the model once use the first profile's opt
    assert steps["simplify"].params["inputs"]["x"]["opt"] == [1, 16, 8]
    assert steps["engine"].params["inputs"]["x"] == {"dtype": None, "shape": [-1, -1, 8]} | SHORT


@pytest.mark.slow
def test_fp16_accuracy_gate_runs_at_each_profiles_opt(seq):
    edit(seq, lambda d: d["engine"].update({"precision": "fp16"}))
    code, report = build_recipe(seq)
    assert code == 0, report
    accuracy = next(s for s in report["steps"] if s["step"] == "accuracy")
    rows = accuracy["meta"]["accuracy"]["outputs"]
    assert [(r["profile"], r["shape"]) for r in rows] == [("short", [1, 16, 8]), ("long", [2, 128, 8])]


TINY_BERT = """
from transformers import BertConfig, BertModel


def build():
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    return BertModel(config)
"""


@pytest.mark.slow
def test_a_bert_engine_with_short_and_long_sequence_profiles(tmp_path):
    needs("transformers")
    needs("torch")
    (tmp_path / "tiny_bert.py").write_text(TINY_BERT)
    ranges = {"short": ([1, 1], [4, 32], [8, 64]), "long": ([1, 64], [1, 256], [2, 512])}
    recipe = {
        "name": "bert",
        "source": {"framework": "pytorch", "entrypoint": "tiny_bert:build", "exporter": "torchscript"},
        "inputs": {"input_ids": {"dtype": "int64", "shape": [-1, -1]},
                   "attention_mask": {"dtype": "int64", "shape": [-1, -1]}},
        "profiles": [{"name": name, "inputs": {n: dict(zip(("min", "opt", "max"), r))
                                               for n in ("input_ids", "attention_mask")}}
                     for name, r in ranges.items()],
        "engine": {"backend": "tensorrt-rtx", "optimization_level": 0},
    }
    (tmp_path / "bert.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None))
    code, report = build_recipe(tmp_path / "bert.yaml")
    assert code == 0, report
    assert statuses(report)["parity"] == "built"  # the framework and ONNX Runtime agree at the first profile's opt
    engine = next(s for s in report["steps"] if s["step"] == "engine")
    assert [(p["index"], p["name"], p["inputs"]["input_ids"]["max"]) for p in engine["meta"]["profiles"]] == [
        (0, "short", [8, 64]), (1, "long", [2, 512])]
    assert {i["name"]: i["shape"] for i in engine["meta"]["inputs"]} == {"input_ids": [-1, -1],
                                                                         "attention_mask": [-1, -1]}
