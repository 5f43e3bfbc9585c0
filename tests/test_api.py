"""trtbuild from Python (trtbuild.api): load, plan, build, status and find_plan do what the command does,
with the same refusals, and import no framework or TensorRT in the calling process."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import yaml

from conftest import conv_model, recipe_dict


@pytest.fixture
def recipe(tmp_path):
    onnx.save(conv_model(), tmp_path / "conv.onnx")
    (tmp_path / "conv.yaml").write_text(yaml.safe_dump(recipe_dict("conv.onnx")))
    return tmp_path / "conv.yaml"


def test_load_plan_build_status_and_find_plan(recipe, tmp_path):
    from trtbuild import api

    loaded = api.load(recipe)
    assert loaded.recipe.name == "conv"
    steps = api.plan([recipe], cache_dir=tmp_path / "cache")
    assert [s.kind.NAME for s in steps] == ["check", "simplify", "engine", "verify"]

    outcome = api.build([recipe], cache_dir=tmp_path / "cache", report=tmp_path / "r.json")
    assert outcome.exit_code == 0 and outcome.ok
    built = {r.step.kind.NAME: r.status for r in outcome.results}
    assert built["engine"] == "built" and (tmp_path / "r.json").exists()

    again = api.status([recipe], cache_dir=tmp_path / "cache")
    assert {r.step.kind.NAME: r.status for r in again.results if r.step.kind.NAME != "verify"} == {
        "check": "cached", "simplify": "cached", "engine": "cached"}
    plan = api.find_plan("conv", cache_dir=tmp_path / "cache", target="tensorrt-rtx")
    assert plan.name == "model.plan" and plan.stat().st_size > 0


def test_what_the_command_refuses_the_api_refuses(recipe, tmp_path):
    from trtbuild import api

    with pytest.raises(api.UsageError):
        api.build([recipe], cache_dir=tmp_path / "cache", step_timeout="soon")
    (tmp_path / "bad.yaml").write_text("name: bad\nsource: {framework: onnx, path: missing.onnx}\n")
    with pytest.raises(api.RecipeError) as caught:
        api.plan([tmp_path / "bad.yaml"], cache_dir=tmp_path / "cache")
    assert "bad.yaml:2" in str(caught.value)


def test_importing_the_api_imports_no_framework_or_tensorrt():
    heavy = ("torch", "tensorflow", "tensorrt", "tensorrt_rtx", "onnxruntime", "ray")
    out = subprocess.run([sys.executable, "-c", "import sys, trtbuild.api; "
                          f"print([m for m in {heavy!r} if m in sys.modules])"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
