"""Keys that mean what they say: no absolute paths in them, and the step's own code in them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, build_recipe, conv_model, needs, recipe_dict
from trtbuild.commands.cli import main

pytestmark = pytest.mark.slow

NET = '''
import torch


def build():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
'''


def keys(report: dict) -> dict[str, str]:
    return {s["step"]: s["key"] for s in report["steps"] if s["key"]}


def test_two_checkouts_at_different_paths_share_every_key(tmp_path):
    needs("torch")
    project = tmp_path / "a" / "project"
    (project / "models").mkdir(parents=True)
    (project / "recipes").mkdir()
    (project / "shared").mkdir()
    (project / "models" / "net.py").write_text(NET)
    (project / "shared" / "labels.txt").write_text("cat\ndog\n")  # a deps: file outside the model's directory
    recipe = {"name": "net", "source": {"framework": "pytorch", "entrypoint": "net:build",
                                        "python_path": ["../models"], "deps": ["../shared/*.txt"]},
              "inputs": {"x": {"shape": [1, 3, 8, 8]}},
              "engine": {"backend": "tensorrt-rtx", "optimization_level": 0}}
    (project / "recipes" / "net.yaml").write_text(json.dumps(recipe))
    copy = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(project, copy)
    reports = []
    for root in (project, copy):
        out = root / "report.json"
        assert main([str(root / "recipes" / "net.yaml"), "--cache-dir", str(root / "cache"), "--report", str(out)]) == 0
        reports.append(json.loads(out.read_text()))
    assert keys(reports[0]) == keys(reports[1])
    assert set(keys(reports[0])) >= {"export", "check", "parity", "simplify", "engine"}


def copied_trtbuild(tmp_path):
    """A copy of the trtbuild package, and build(*args): the copy run on a conv model's recipe ({step: entry})."""
    code = tmp_path / "code"
    shutil.copytree(REPO / "trtbuild", code / "trtbuild", ignore=shutil.ignore_patterns("__pycache__"))
    import onnx
    import yaml

    onnx.save(conv_model(), tmp_path / "conv.onnx")
    (tmp_path / "conv.yaml").write_text(yaml.safe_dump(recipe_dict("conv.onnx")))

    def build(*args: str) -> dict:
        report = tmp_path / "report.json"
        subprocess.run([sys.executable, "-m", "trtbuild", str(tmp_path / "conv.yaml"), "--cache-dir",
                        str(tmp_path / "cache"), "--report", str(report), *args],
                       env={"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin"}, cwd=tmp_path, check=False)
        return {s["step"]: s for s in json.loads(report.read_text())["steps"]}

    return code, build


def test_a_changed_step_implementation_reruns_that_step_and_a_comment_does_not(tmp_path):
    code, build = copied_trtbuild(tmp_path)
    build()
    engine = code / "trtbuild" / "steps" / "engine.py"
    original = engine.read_text()
    # Comments, docstrings and layout are not what the step does: nothing reruns.
    engine.write_text(original.replace('"""engine:', '"""The engine step:', 1) + "\n# a note\n\n")
    steps = build("--dry-run")
    assert {s["status"] for s in steps.values()} <= {"cached", "skipped"}
    # A change to the code that runs reruns that step alone.
    engine.write_text(original + "\nLIMIT = 1\n")
    steps = build("--dry-run")
    assert steps["check"]["status"] == steps["simplify"]["status"] == "cached"
    assert steps["engine"]["status"] == "would-run"
    assert steps["engine"]["reason"].startswith("version: ")


def test_code_versions_kept_with_the_code_index_follow_new_imports_edits_and_links(tmp_path):
    """The modules a step kind's code reaches are kept with the code index (a no-op build resolves no
    import): a new import, an edit of the module it brings in, and a link that changes what the import
    resolves to all still change the step's key."""
    code, build = copied_trtbuild(tmp_path)
    assert build()["engine"]["status"] == "built"
    extra = code / "trtbuild" / "backends" / "extra.py"
    extra.write_text("LIMIT = 1\n")
    engine = code / "trtbuild" / "steps" / "engine.py"
    engine.write_text(engine.read_text() + "\nfrom trtbuild.backends import extra  # noqa: E402,F401\n")
    assert build()["engine"]["status"] == "built"
    assert {s["status"] for s in build().values()} <= {"cached", "skipped"}  # the walk is kept now
    extra.write_text("LIMIT = 2\n")  # only the module the new import brought in
    steps = build("--dry-run")
    assert steps["check"]["status"] == "cached" and steps["engine"]["status"] == "would-run"
    assert steps["engine"]["reason"].startswith("version: ")
    extra.write_text("LIMIT = 1\n")
    assert build("--dry-run")["engine"]["status"] == "cached"
    # The same bytes through a link to a file outside the package: not trtbuild's code any more (the key
    # leaves it out), though no .py file of the package changed its bytes.
    outside = tmp_path / "extra.py"
    outside.write_text("LIMIT = 1\n")
    extra.unlink()
    extra.symlink_to(outside)
    steps = build("--dry-run")
    assert steps["engine"]["status"] == "would-run" and steps["engine"]["reason"].startswith("version: ")


def test_a_new_max_rebuilds_only_the_engine(project):
    code, first = project.build()
    assert code == 0
    data = recipe_dict("conv.onnx")
    data["inputs"]["x"]["max"] = [8, 3, 16, 16]
    project.write_recipe(data)
    code, dry = project.build("--dry-run")
    would_run = {s["step"]: s["reason"] for s in dry["steps"] if s["status"] == "would-run"}
    assert list(would_run) == ["engine"]
    assert would_run["engine"] == "params.inputs.x.max: [4, 3, 16, 16] -> [8, 3, 16, 16]"


def test_a_reverted_change_explains_itself_against_the_last_build(project):
    for workspace in ("256MiB", "512MiB", "256MiB"):  # the last build is a cache hit
        project.write_recipe(recipe_dict("conv.onnx", workspace=workspace))
        assert project.build()[0] == 0
    project.write_recipe(recipe_dict("conv.onnx", workspace="1GiB"))
    code, dry = project.build("--dry-run")
    engine = next(s for s in dry["steps"] if s["step"] == "engine")
    assert engine["reason"] == "params.workspace: 268435456 -> 1073741824"


def test_status_names_the_root_cause(project, capsys):
    assert project.build()[0] == 0
    project.write_model(conv_model(seed=1))
    code, dry = project.build("--dry-run")
    reasons = {s["step"]: s["reason"] for s in dry["steps"]}
    assert reasons["check"].startswith("inputs.model.(main) changed")
    assert reasons["engine"] == reasons["simplify"] == reasons["check"] + " (check reruns first)"


def test_an_edited_imported_module_reruns_export_and_is_named(tmp_path):
    needs("torch")
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "__init__.py").write_text("")
    (tmp_path / "nets" / "blocks.py").write_text("import torch\n\n\ndef block():\n    return torch.nn.ReLU()\n")
    (tmp_path / "model.py").write_text("import torch\nfrom nets.blocks import block\n\n\n"
                                       "def build():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), block())\n")
    recipe = {"name": "net", "source": {"framework": "pytorch", "entrypoint": "model:build"},
              "inputs": {"x": {"shape": [1, 3, 8, 8]}}, "engine": {"backend": "tensorrt-rtx", "optimization_level": 0}}
    (tmp_path / "net.yaml").write_text(json.dumps(recipe))
    args = [str(tmp_path / "net.yaml"), "--cache-dir", str(tmp_path / "cache"), "--report", str(tmp_path / "r.json")]
    assert main(args) == 0
    (tmp_path / "nets" / "blocks.py").write_text("import torch\n\n\ndef block():\n    return torch.nn.Sigmoid()\n")
    assert main([*args, "--dry-run"]) == 0
    export = next(s for s in json.loads((tmp_path / "r.json").read_text())["steps"] if s["step"] == "export")
    assert export["status"] == "would-run"
    assert export["reason"].startswith("inputs.code.nets/blocks.py changed")


def test_a_new_max_reruns_a_pytorch_export_which_runs_the_model_there_and_the_engine(tmp_path):
    """The export runs the exported model at every profile's min / opt / max (trtbuild.models.shape_runs):
    a new max is a new promise to check; the same ONNX model then leaves the steps after it cached."""
    needs("torch")
    (tmp_path / "net.py").write_text(NET)
    recipe = {"name": "net", "source": {"framework": "pytorch", "entrypoint": "net:build"},
              "inputs": {"x": {"shape": [-1, 3, 8, 8], "min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}},
              "engine": {"backend": "tensorrt-rtx", "optimization_level": 0}}
    (tmp_path / "net.yaml").write_text(json.dumps(recipe))
    assert build_recipe(tmp_path / "net.yaml")[0] == 0
    recipe["inputs"]["x"]["max"] = [16, 3, 8, 8]
    (tmp_path / "net.yaml").write_text(json.dumps(recipe))
    code, report = build_recipe(tmp_path / "net.yaml")
    assert code == 0
    assert {s["step"]: s["status"] for s in report["steps"] if s["status"] != "skipped"} == {
        "export": "built", "check": "cached", "parity": "cached", "simplify": "cached", "engine": "built"}
    assert report["steps"][0]["meta"]["shapes_run"] == ["opt", "min", "max"]


def test_a_new_cache_takes_trtbuilds_code_facts_from_the_users_own_index(tmp_path, monkeypatch):
    """trtbuild's code facts are kept per user as well as per cache: a build into an empty cache parses
    none of trtbuild's modules; a user index that is not valid is parsed afresh."""
    from trtbuild.store import code

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for name, value in (("_index_folder", []), ("_index_file_now", []), ("_walks", {})):
        monkeypatch.setattr(code, name, value)
    code._package_index.cache_clear()
    try:
        code.keep_index_in(tmp_path / "first" / "code")
        first = code._package_index()
        [mine] = (tmp_path / "xdg" / "trtbuild" / "code").glob("*.json")
        code._package_index.cache_clear()
        code.keep_index_in(tmp_path / "second" / "code")
        parse = code.source_facts
        monkeypatch.setattr(code, "source_facts", lambda *args: pytest.fail("parsed again"))
        assert code._package_index() == first
        assert [p.name for p in (tmp_path / "second" / "code").glob("*.json")] == [mine.name]  # kept there too
        mine.write_text('{"facts": {"x": 1}}')
        code._package_index.cache_clear()
        code.keep_index_in(tmp_path / "third" / "code")
        parsed = []
        monkeypatch.setattr(code, "source_facts", lambda *args: parsed.append(args[1]) or parse(*args))
        assert code._package_index() == first
        assert len(parsed) == len(first)
    finally:
        code._package_index.cache_clear()
