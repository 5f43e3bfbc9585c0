"""`trtbuild triton` writes only what Triton can load, and never hands a GPU a plan it cannot run:
TensorRT-RTX plans (real, built here) as a Python-backend model choosing its plan per GPU, full-TensorRT
plans (which cannot be built without TensorRT and its GPU: their model.json as the engine step writes
it) under Triton's TensorRT backend per compute capability, and recipes with both. Every config is
parsed with Triton's own model_config.proto (tritonclient, installed in CI)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import yaml

from conftest import build_recipe, conv_model, recipe_dict
from helpers import chooser, parse_config
from trtbuild.commands.cli import main
from trtbuild.commands.triton_config import model_files
from trtbuild.errors import UsageError

IO = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3, 16, 16]}],
      "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 8, 16, 16]}],
      "profiles": [{"index": 0, "name": "default", "inputs": {"x": {"min": [1, 3, 16, 16], "opt": [2, 3, 16, 16],
                                                                     "max": [4, 3, 16, 16]}}}]}


def meta(backend: str, caps, precision: str = "fp32", gpu_model=None) -> dict:
    arch = "portable" if caps == "portable" else "+".join("sm" + c.replace(".", "") for c in caps)
    version = "10.13.3.9" if backend == "tensorrt" else "1.7.1.116"
    return IO | {"backend": backend, "backend_version": version, "target": f"{backend}-{version}-{arch}",
                 "compute_capabilities": caps, "gpu_model": gpu_model, "precision": precision}


@pytest.fixture
def conv_recipe(tmp_path) -> Path:
    onnx.save(conv_model(), tmp_path / "conv.onnx")
    recipe = tmp_path / "conv.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict("conv.onnx"), sort_keys=False))
    return recipe


def triton(recipe: Path, *args: str) -> int:
    return main(["triton", str(recipe), "--cache-dir", str(recipe.parent / "cache"),
                 "--repository", str(recipe.parent / "repo"), *args])


def test_full_tensorrt_plans_are_served_per_compute_capability_with_no_default(tmp_path):
    plans = [(meta("tensorrt", ["8.6"]), tmp_path / "a.plan"), (meta("tensorrt", ["8.9"], "fp32"), tmp_path / "b.plan")]
    config, files = model_files("conv", plans)
    parsed = parse_config(config)
    assert parsed["platform"] == "tensorrt_plan" and "backend" not in parsed
    assert parsed["cc_model_filenames"] == {"8.6": "model.sm86.plan", "8.9": "model.sm89.plan"}
    # Triton falls back to default_model_filename (model.plan unless set) on any other GPU: there is none,
    # so a Hopper or a T4 refuses the model instead of loading another GPU's plan.
    assert "default_model_filename" not in parsed and "model.plan" not in files
    assert files == {"model.sm86.plan": tmp_path / "a.plan", "model.sm89.plan": tmp_path / "b.plan"}
    assert parsed["max_batch_size"] == 4 and parsed["input"][0]["dims"] == ["3", "16", "16"]


def test_full_tensorrt_plans_tied_to_one_gpu_model_are_refused(tmp_path):
    plans = [(meta("tensorrt", ["8.6"], gpu_model="a10"), tmp_path / "a.plan")]
    with pytest.raises(UsageError, match="run only on the GPU model that built them.*compute capability alone"):
        model_files("conv", plans)


def test_an_fp8_tensorrt_rtx_plan_is_never_chosen_for_a_gpu_before_ada(tmp_path):
    plan = tmp_path / "fp8.plan"
    plan.write_bytes(b"plan")
    config, files = model_files("conv", [(meta("tensorrt-rtx", "portable", "fp8"), plan)])
    model = tmp_path / "conv"
    (model / "1").mkdir(parents=True)
    for name, content in files.items():
        (model / "1" / name).write_bytes(content if isinstance(content, bytes) else content.read_bytes())
    assert parse_config(config)["backend"] == "python"
    choose = chooser(model)
    assert choose("8.9") == choose("12.0") == "model.portable.plan"
    with pytest.raises(ValueError, match="fp8 plans.*compute capability 8.6"):
        choose("8.6")


def test_mixed_plans_ask_for_one_backend(tmp_path):
    plans = [(meta("tensorrt", ["8.6"]), tmp_path / "a.plan"), (meta("tensorrt-rtx", "portable"), tmp_path / "b.plan")]
    with pytest.raises(UsageError, match="a Triton model serves one backend's plans.*choose one with --backend"):
        model_files("conv", plans)
    assert parse_config(model_files("conv", plans, "tensorrt")[0])["platform"] == "tensorrt_plan"
    assert parse_config(model_files("conv", plans, "tensorrt-rtx")[0])["backend"] == "python"


def test_a_mixed_recipe_serves_its_tensorrt_rtx_plans_and_says_why_not_the_others(conv_recipe, capsys):
    data = yaml.safe_load(conv_recipe.read_text()) | {"targets": ["tensorrt:sm86", "tensorrt-rtx"]}
    conv_recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    assert build_recipe(conv_recipe)[0] == 0  # the sm86 target is left to a machine with that GPU
    capsys.readouterr()
    assert triton(conv_recipe) == 1
    err = capsys.readouterr().err
    assert "-sm86]: not built (cannot be built here: needs " in err and "-portable]" not in err
    assert triton(conv_recipe, "--backend", "tensorrt-rtx") == 0
    model = conv_recipe.parent / "repo" / "conv"
    assert parse_config((model / "config.pbtxt").read_text())["backend"] == "python"
    assert sorted(p.name for p in (model / "1").iterdir()) == ["model.portable.plan", "model.py", "plans.json"]
    with pytest.raises(ValueError, match="Hopper"):
        chooser(model)("9.0")


def test_plans_built_with_target_reach_the_repository(conv_recipe, capsys):
    assert build_recipe(conv_recipe, "--target", "tensorrt-rtx:sm89")[0] == 0  # as the nightly guide builds
    assert triton(conv_recipe) == 1  # the recipe's own target (portable) was not built
    assert "-portable]: not built" in capsys.readouterr().err
    assert triton(conv_recipe, "--target", "tensorrt-rtx:sm89") == 0
    model = conv_recipe.parent / "repo" / "conv"
    assert json.loads((model / "1" / "plans.json").read_text())["plans"] == {"8.9": "model.sm89.plan"}
    choose = chooser(model)
    assert choose("8.9") == "model.sm89.plan"
    with pytest.raises(ValueError, match="runs on compute capability 8.6: built for 8.9"):
        choose("8.6")  # never the sm89 plan on an sm86 card
