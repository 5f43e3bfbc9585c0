"""Recipe validation: every mistake is reported at file:line with the fix, exit code 2."""

from __future__ import annotations

import json
import textwrap

import pytest

from trtbuild.commands.cli import main
from trtbuild.errors import RecipeError
from trtbuild.recipes.loader import load_recipe

GOOD = """\
name: resnet_block
source:
  framework: onnx
  path: m.onnx
inputs:
  "gpu_0/data_0":
    dtype: float32
    shape: [-1, 3, 224, 224]
    min: [1, 3, 224, 224]
    opt: [4, 3, 224, 224]
    max: [8, 3, 224, 224]
onnx:
  opset: 17
  simplify: true
engine:
  backend: auto
  precision: fp32
  workspace: 1GiB
  optimization_level: 3
"""


def problems(tmp_path, text: str) -> list[str]:
    (tmp_path / "m.onnx").write_bytes(b"")
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return info.value.problems


def test_good_recipe_loads_with_defaults_and_units(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "r.yaml").write_text(GOOD.replace("workspace: 1GiB", "workspace: 512MiB"))
    loaded = load_recipe(tmp_path / "r.yaml")
    assert loaded.recipe.engine.workspace == 512 * 2**20
    assert loaded.recipe.inputs["gpu_0/data_0"].profile()[2] == [8, 3, 224, 224]
    assert loaded.source_path() == (tmp_path / "m.onnx").resolve()


def test_unknown_key_names_line_and_suggests_fix(tmp_path):
    [problem] = problems(tmp_path, GOOD.replace("  workspace: 1GiB", "  workspce: 1GiB"))
    assert problem == f"{tmp_path / 'r.yaml'}:18: engine.workspce: unknown key (did you mean 'workspace'?)"


def test_unknown_key_without_close_match_lists_allowed_keys(tmp_path):
    [problem] = problems(tmp_path, GOOD.replace("    dtype: float32", "    colour: red"))
    assert ":7: " in problem and "allowed keys: dtype, shape, min, opt, max" in problem


def test_min_greater_than_max(tmp_path):
    [problem] = problems(tmp_path, GOOD.replace("min: [1, 3", "min: [9, 3"))
    assert ":6: " in problem and "min <= opt <= max" in problem and "min=9" in problem


def test_rank_mismatch_and_missing_range(tmp_path):
    [rank] = problems(tmp_path, GOOD.replace("max: [8, 3, 224, 224]", "max: [8, 3, 224]"))
    assert "max has rank 3 but shape has rank 4" in rank
    text = GOOD.replace("    min: [1, 3, 224, 224]\n", "").replace("    max: [8, 3, 224, 224]\n", "")
    [missing] = problems(tmp_path, text)
    assert "dynamic dims" in missing and "add min, max" in missing


def test_static_dims_must_agree_with_range(tmp_path):
    [problem] = problems(tmp_path, GOOD.replace("opt: [4, 3, 224, 224]", "opt: [4, 3, 256, 224]"))
    assert "opt[2]=256 but shape[2] is fixed at 224" in problem


def test_bad_values_each_reported(tmp_path):
    found = problems(tmp_path, GOOD.replace("opset: 17", "opset: 3").replace("workspace: 1GiB", "workspace: lots"))
    assert len(found) == 2
    assert any(":13: onnx.opset:" in p for p in found)
    assert any(":18: engine.workspace:" in p for p in found)


def test_missing_source_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.problems == [f"{path}:4: source.path: no such file: {tmp_path / 'm.onnx'}"]


def test_duplicate_keys_and_invalid_yaml(tmp_path):
    [dup] = problems(tmp_path, GOOD + "name: again\n")
    assert ":20: name: duplicate key" in dup
    [bad] = problems(tmp_path, GOOD.replace("opset: 17", "opset: [17"))
    assert "invalid YAML" in bad


def test_cli_exit_code_2_without_traceback(tmp_path, capsys):
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "r.yaml").write_text(GOOD.replace("  workspace: 1GiB", "  workspce: 1GiB"))
    assert main(["build", str(tmp_path / "r.yaml"), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'workspace'?" in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "actions").exists()
    assert main(["build", str(tmp_path / "nope.yaml")]) == 2


def test_schema_command_prints_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "trtbuild recipe"
    assert "workspace" in json.dumps(schema["$defs"]["EngineOptions"])
    assert schema["additionalProperties"] is False


def test_example_recipes_are_valid():
    from pathlib import Path

    found = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert len(found) >= 2, found  # the examples the README builds are there
    for path in found:
        loaded = load_recipe(path)
        assert loaded.recipe.name and loaded.file == path
