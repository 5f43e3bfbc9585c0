"""Precisions a target cannot take are refused at planning, at the recipe's line, with the reason and a
fix; what only the builder can judge is built, and its refusal explained."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import yaml

from conftest import REPO, build_recipe, recipe_dict
from trtbuild.commands.cli import main


def line_of(recipe, text: str) -> int:
    return next(i for i, line in enumerate(recipe.read_text().splitlines(), 1) if text in line)


def test_int8_for_turing_with_tensorrt_rtx_is_refused_at_planning(tmp_path, capsys):
    recipe = tmp_path / "resnet_block_int8.yaml"
    shutil.copy(REPO / "recipes" / "resnet_block_int8.yaml", recipe)
    shutil.copytree(REPO / "recipes" / "models", tmp_path / "models")
    shutil.copytree(REPO / "recipes" / "calib", tmp_path / "calib")
    code = main([str(recipe), "--cache-dir", str(tmp_path / "cache"), "--target", "tensorrt-rtx:sm75"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{recipe}:{line_of(recipe, 'precision: int8')}: engine.precision int8 cannot be built for sm_75" in err
    assert "fp32 matrix multiply" in err and "fp16 for sm75" in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "objects").exists() or not any((tmp_path / "cache" / "objects").rglob("*"))


def test_an_fp32_matrix_multiply_for_turing_fails_with_the_node_and_the_fix(tmp_path):
    recipe = tmp_path / "resnet_block.yaml"
    shutil.copy(REPO / "recipes" / "resnet_block.yaml", recipe)
    shutil.copytree(REPO / "recipes" / "models", tmp_path / "models")
    code, report = build_recipe(recipe, "--target", "tensorrt-rtx:sm75")
    assert code == 1
    [failure] = report["failures"]
    assert failure["message"].startswith("TensorRT-RTX cannot build node 'head/Gemm' for Turing (sm_75): "
                                         "FP32 GEMM is not supported; build sm_75 targets with engine.precision fp16")
    engine = next(s for s in report["steps"] if s["step"] == "engine")
    assert "cudaError 35" not in engine["error"]  # the no-driver probe is noise beside the real error


def test_fp32_without_a_matrix_multiply_builds_for_turing(tmp_path):
    """Never stricter than the backend: a convolutional model builds for sm_75 in fp32."""
    from conftest import conv_model
    import onnx

    onnx.save(conv_model(), tmp_path / "conv.onnx")
    recipe = tmp_path / "conv.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict("conv.onnx") | {"targets": ["tensorrt-rtx:sm75"]}, sort_keys=False))
    code, report = build_recipe(recipe)
    assert code == 0 and next(s for s in report["steps"] if s["step"] == "engine")["status"] == "built"


def test_bf16_without_modelopt_names_the_line_and_an_install_that_keeps_the_pins(tmp_path, capsys):
    if importlib.util.find_spec("modelopt") is not None:
        pytest.skip("ModelOpt is installed: bf16 builds")
    import onnx
    from conftest import conv_model

    onnx.save(conv_model(), tmp_path / "conv.onnx")
    recipe = tmp_path / "conv.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict("conv.onnx", precision="bf16"), sort_keys=False))
    assert main([str(recipe), "--cache-dir", str(tmp_path / "cache")]) == 2
    line = next(l for l in capsys.readouterr().err.splitlines() if "bf16" in l)
    assert line.startswith(f"{recipe}:{line_of(recipe, 'precision: bf16')}: engine.precision bf16 needs NVIDIA ModelOpt")
    assert "--no-deps nvidia-modelopt" in line and "or choose fp16" in line
    assert "pip install 'trtbuild[modelopt]'" not in line  # the install that replaces the pinned onnx / onnxruntime
