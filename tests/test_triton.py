"""`trtbuild triton`: a Triton model repository from real TensorRT-RTX plans (portable, sm86, sm89+sm120),
its config.pbtxt parsed with Triton's own model_config.proto where tritonclient is installed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
import yaml

from conftest import build_recipe
from helpers import LONG, SHORT, chooser, load, parse_config, seq_model, seq_recipe
from trtbuild.commands.cli import main
from trtbuild.commands.triton_config import max_batch_size

TARGETS = ["tensorrt-rtx", "tensorrt-rtx:sm86", "tensorrt-rtx:sm120+sm89"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def repo_project(tmp_path) -> Path:
    onnx.save(seq_model(), tmp_path / "seq.onnx")
    recipe = tmp_path / "seq.yaml"
    recipe.write_text(yaml.safe_dump(seq_recipe(short=SHORT, long=LONG) | {"targets": TARGETS}, sort_keys=False))
    return recipe


def triton(recipe: Path, repository: Path, *args: str) -> int:
    return main(["triton", str(recipe), "--cache-dir", str(recipe.parent / "cache"), "--repository", str(repository),
                 *args])


def test_nothing_built_fails_and_writes_nothing(repo_project, capsys):
    repository = repo_project.parent / "repo"
    assert triton(repo_project, repository) == 1
    err = capsys.readouterr().err
    assert "the repository needs every target's plan; build them first" in err
    assert "seq [tensorrt-rtx-" in err and "-sm86]: not built (never built" in err
    assert not repository.exists()


@pytest.mark.slow
def test_a_repository_for_three_targets_and_two_profiles(repo_project, capsys):
    code, report = build_recipe(repo_project)
    assert code == 0, report
    plans = {s["target"].rsplit("-", 1)[1]: digest(Path(s["outputs"]["model.plan"])) for s in report["steps"]
             if s["step"] == "engine"}
    assert set(plans) == {"portable", "sm86", "sm89+sm120"}
    repository = repo_project.parent / "repo"
    assert triton(repo_project, repository) == 0
    assert f"wrote  {repository / 'seq'}" in capsys.readouterr().out

    model = repository / "seq"
    assert sorted(p.name for p in (model / "1").iterdir()) == [
        "model.portable.plan", "model.py", "model.sm86.plan", "model.sm89-sm120.plan", "plans.json"]
    assert digest(model / "1" / "model.portable.plan") == plans["portable"]
    assert digest(model / "1" / "model.sm86.plan") == plans["sm86"]
    assert digest(model / "1" / "model.sm89-sm120.plan") == plans["sm89+sm120"]
    assert not any(p.name.startswith(".") for p in model.rglob("*"))  # no staging folder left

    # Triton's TensorRT backend cannot load TensorRT-RTX plans: a Python-backend model runs them.
    config = parse_config((model / "config.pbtxt").read_text())
    assert config["name"] == "seq" and config["backend"] == "python" and "platform" not in config
    assert "default_model_filename" not in config and "cc_model_filenames" not in config
    assert config["max_batch_size"] == 4  # the largest batch every profile takes (short: max 4)
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["-1", "8"]}]
    assert config["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": ["-1", "8"]}]
    assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_GPU", 1)]
    choose = chooser(model)
    assert [choose(cc) for cc in ("8.0", "8.6", "8.9", "12.0", "12.1")] == [
        "model.portable.plan", "model.sm86.plan", "model.sm89-sm120.plan", "model.sm89-sm120.plan",
        "model.portable.plan"]
    for cc in ("9.0", "7.5", "10.0"):  # Hopper (and what TensorRT-RTX plans never run on): refused, with why
        with pytest.raises(ValueError, match=f"no TensorRT-RTX plan of this model runs on compute capability {cc}"):
            choose(cc)
    rtx_model = load(model / "1" / "model.py")
    profiles = json.loads((model / "1" / "plans.json").read_text())["profiles"]
    assert rtx_model.choose_profile(profiles, {"x": (2, 8, 8)}) == 0
    assert rtx_model.choose_profile(profiles, {"x": (1, 128, 8)}) == 1

    # Idempotent: the same plans leave the folder alone (a polling server reloads nothing).
    stamps = {p: p.stat().st_mtime_ns for p in model.rglob("*")}
    assert triton(repo_project, repository) == 0
    assert f"unchanged  {model}" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in model.rglob("*")} == stamps

    # Another version folder keeps the first one.
    assert triton(repo_project, repository, "--version", "2") == 0
    assert sorted(p.name for p in model.iterdir()) == ["1", "2", "config.pbtxt"]

    # A changed profile: the engines rebuild, the repository follows; until then it refuses a stale plan.
    data = yaml.safe_load(repo_project.read_text())
    data["profiles"][0]["inputs"]["x"]["max"] = [2, 64, 8]
    repo_project.write_text(yaml.safe_dump(data, sort_keys=False))
    assert triton(repo_project, repository) == 1
    assert "params.profiles[0].inputs.x.max" in capsys.readouterr().err
    assert build_recipe(repo_project)[0] == 0
    assert triton(repo_project, repository) == 0
    assert parse_config((model / "config.pbtxt").read_text())["max_batch_size"] == 2
    assert digest(model / "1" / "model.portable.plan") != plans["portable"]


def test_max_batch_size_follows_the_profiles():
    meta = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]}],
            "profiles": [{"index": 0, "name": "a", "inputs": {"x": {"min": [1, 3], "opt": [4, 3], "max": [16, 3]}}},
                         {"index": 1, "name": "b", "inputs": {"x": {"min": [1, 3], "opt": [2, 3], "max": [8, 3]}}}]}
    assert max_batch_size(meta) == 8
    meta["profiles"][1]["inputs"]["x"]["min"] = [2, 3]  # a profile that cannot take a batch of 1: no batching
    assert max_batch_size(meta) == 0
    meta["profiles"][1]["inputs"]["x"]["min"] = [1, 3]
    meta["outputs"][0]["shape"] = [1, 3]  # an output without a batch dim: no batching
    assert max_batch_size(meta) == 0
    assert max_batch_size({"inputs": [{"shape": [1, 3]}], "outputs": [{"shape": [1, 3]}], "profiles": []}) == 0
