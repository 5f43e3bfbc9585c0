"""Recipes validated before: a no-op build reads their records instead of importing pydantic, and
any other byte of a recipe is validated in full again, with its errors at file:line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from conftest import recipe_dict
from trtbuild.recipes import loader as recipe_module
from trtbuild.recipes import records as validated
from trtbuild.errors import RecipeError
from trtbuild.recipes.loader import Section, load_recipe


def _plain(value):
    """A loaded recipe as plain data, sections included, to compare two loads."""
    if isinstance(value, Section):
        return {type(value).__name__: {k: _plain(v) for k, v in vars(value).items()}}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.fixture
def recipe_file(tmp_path):
    (tmp_path / "conv.onnx").write_bytes(b"")
    path = tmp_path / "conv.yaml"
    data = recipe_dict("conv.onnx")
    data["inputs"] = {"b": {"shape": [1, 4]}, "a": {"shape": [1, 4]}}  # input order matters: it is kept
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _no_validation(*args):
    raise AssertionError("validated again")


def test_a_record_gives_what_validation_gave(recipe_file, tmp_path, monkeypatch):
    records = tmp_path / "records"
    fresh = load_recipe(recipe_file)
    first = load_recipe(recipe_file, records)
    assert len(list(records.iterdir())) == 1
    monkeypatch.setattr(recipe_module, "_validate", _no_validation)
    again = load_recipe(recipe_file, records)
    assert _plain(again.recipe) == _plain(first.recipe) == _plain(fresh.recipe)
    assert again.lines == fresh.lines
    assert list(again.recipe.inputs) == ["b", "a"]
    assert again.recipe.engine.workspace == 256 * 2**20
    assert again.recipe.inputs["b"].profile() == ([1, 4], [1, 4], [1, 4])
    assert again.recipe.source.given == {"framework", "path"}
    assert again.where("engine", "workspace") == f"{recipe_file}:19"


def test_any_edit_is_validated_again_with_its_errors_at_file_line(recipe_file, tmp_path, monkeypatch):
    records = tmp_path / "records"
    good = recipe_file.read_text()
    load_recipe(recipe_file, records)
    recipe_file.write_text(good.replace("  workspace: 256MiB", "  workspce: 256MiB"))
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file, records)
    assert info.value.problems == [f"{recipe_file}:19: engine.workspce: unknown key (did you mean 'workspace'?)"]
    recipe_file.write_text(good.replace("256MiB", "512MiB"))  # valid, and not the bytes recorded
    assert load_recipe(recipe_file, records).recipe.engine.workspace == 512 * 2**20
    recipe_file.write_text(good + " ")  # one byte more, same meaning: still validated, not looked up
    calls = []
    monkeypatch.setattr(recipe_module, "_validate", lambda *a: calls.append(a) or _no_validation())
    with pytest.raises(AssertionError, match="validated again"):
        load_recipe(recipe_file, records)
    assert len(calls) == 1
    recipe_file.write_text(good)
    assert load_recipe(recipe_file, records).recipe.engine.workspace == 256 * 2**20  # its record
    assert len(list(records.iterdir())) == 2  # good and 512MiB; never the bad one


def test_files_a_recipe_names_are_checked_on_every_load(recipe_file, tmp_path):
    records = tmp_path / "records"
    load_recipe(recipe_file, records)
    (tmp_path / "conv.onnx").unlink()
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file, records)
    assert info.value.problems == [f"{recipe_file}:4: source.path: no such file: {tmp_path / 'conv.onnx'}"]


def test_a_record_of_other_code_or_a_damaged_record_is_not_used(recipe_file, tmp_path, monkeypatch):
    records = tmp_path / "records"
    load_recipe(recipe_file, records)
    [record] = records.iterdir()
    record.write_text(record.read_text()[:-10])  # cut short (a crash while writing)
    assert load_recipe(recipe_file, records).recipe.name == "conv"
    assert json.loads(record.read_text())  # validated again, recorded again
    data = recipe_file.read_bytes()
    before = validated.key(data)
    validated._validator.cache_clear()
    monkeypatch.setattr(validated, "_code", lambda module: "other schema code")
    try:
        assert validated.key(data) != before
    finally:
        validated._validator.cache_clear()


def test_values_json_cannot_hold_are_not_recorded(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nsource: {framework: pytorch, entrypoint: 'nets:make', kwargs: {since: 2024-01-01}}\n"
                    "inputs: {x: {shape: [1, 3]}}\n")
    loaded = load_recipe(path, tmp_path / "records")
    assert str(loaded.recipe.source.kwargs["since"]) == "2024-01-01"
    assert not (tmp_path / "records").exists()


def test_noop_build_of_an_unchanged_recipe_imports_neither_pydantic_nor_yaml_nor_pynvml(project):
    hour_ago = time.time() - 3600
    os.utime(project.model, (hour_ago, hour_ago))
    script = (
        "import sys; from trtbuild.commands.cli import main\n"
        f"code = main(['build', {str(project.recipe)!r}, '--cache-dir', {str(project.cache)!r}, '--quiet'])\n"
        "print(code, sorted(m for m in ('pydantic', 'pydantic_core', 'yaml', 'pynvml') if m in sys.modules))\n"
    )
    run = lambda: subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run().stdout.strip().splitlines()[-1].startswith("0 ")  # builds, validates, asks NVML
    assert run().stdout.strip().splitlines()[-1] == "0 []"  # no-op: the recipe's and NVML's records
    project.recipe.write_text(project.recipe.read_text().replace("optimization_level: 0", "optimizaton_level: 0"))
    done = run()
    assert done.stdout.strip().splitlines()[-1] == "2 ['pydantic', 'pydantic_core', 'yaml']"
    assert f"{project.recipe}:" in done.stderr and "engine.optimizaton_level: unknown key" in done.stderr
