"""trtbuild's code index (CACHE/code/, ~/.cache/trtbuild/code) gives each step kind's code version, in
every key. An index another user could have written is not trusted: a forged one gives no wrong hit; a
worker whose code differs from the key's bytes computes the version from its files, so a farm node with
other code refuses the task whatever an index says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, conv_model, recipe_dict
from trtbuild.steps import action
from trtbuild.store import code

OTHER_UID = 4242


def test_a_forged_index_of_another_user_in_a_shared_cache_gives_no_wrong_hit(tmp_path):
    if os.getuid() != 0:
        pytest.skip("handing a file to another user needs root")
    import onnx
    import yaml

    copy = tmp_path / "code"
    shutil.copytree(REPO / "trtbuild", copy / "trtbuild", ignore=shutil.ignore_patterns("__pycache__"))
    onnx.save(conv_model(), tmp_path / "conv.onnx")
    (tmp_path / "conv.yaml").write_text(yaml.safe_dump(recipe_dict("conv.onnx")))
    no_user_index = tmp_path / "not-a-folder"
    no_user_index.write_text("")  # XDG_CACHE_HOME a file: only the cache's index is there to use

    def build(*args: str) -> dict:
        report = tmp_path / "report.json"
        subprocess.run([sys.executable, "-m", "trtbuild", str(tmp_path / "conv.yaml"), "--cache-dir",
                        str(tmp_path / "cache"), "--report", str(report), *args], check=False, cwd=tmp_path,
                       env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(no_user_index)})
        return {s["step"]: s for s in json.loads(report.read_text())["steps"]}

    assert build()["engine"]["status"] == "built"
    [old_index] = (tmp_path / "cache" / "code").glob("*.json")
    old_facts = json.loads(old_index.read_text())["facts"]
    engine = copy / "trtbuild" / "steps" / "engine.py"
    engine.write_text(engine.read_text() + "\nLIMIT = 1\n")  # new code: the engine step must rerun
    assert build("--dry-run")["engine"]["status"] == "would-run"
    [new_index] = (tmp_path / "cache" / "code").glob("*.json")
    # A neighbour rewrites the index for the new sources with the old code's digests (the old key again).
    forged = json.loads(new_index.read_text())
    forged["facts"][str(engine)] = old_facts[str(engine)]
    forged["walks"] = {}
    new_index.write_text(json.dumps(forged))
    os.chown(new_index, OTHER_UID, OTHER_UID)
    steps = build("--dry-run")
    assert steps["engine"]["status"] == "would-run", "the forged index gave the old key"
    assert steps["engine"]["reason"].startswith("version: ")
    assert steps["check"]["status"] == "cached"


def test_only_an_index_no_one_else_can_write_is_read(tmp_path):
    facts = {"facts": {"a.py": {"digest": "d", "imports": [], "named": []}}, "walks": {}}
    open_folder = tmp_path / "shared"
    open_folder.mkdir(mode=0o775)
    open_folder.chmod(0o775)
    index = open_folder / "index.json"
    index.write_text(json.dumps(facts))
    index.chmod(0o644)
    assert code._read_trusted(index) == facts
    index.chmod(0o664)  # a group member could rewrite it in place
    assert code._read_trusted(index) is None
    private = tmp_path / "mine"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    shutil.copy(index, private / "index.json")
    (private / "index.json").chmod(0o664)
    assert code._read_trusted(private / "index.json") == facts  # nobody else can reach it
    os.mkfifo(tmp_path / "fifo.json")
    assert code._read_trusted(tmp_path / "fifo.json") is None  # never blocks
    (tmp_path / "link.json").symlink_to(index)
    assert code._read_trusted(tmp_path / "link.json") is None
    if os.getuid() == 0:
        index.chmod(0o644)
        os.chown(index, OTHER_UID, OTHER_UID)
        assert code._read_trusted(index) is None


def test_a_worker_with_other_code_refuses_whatever_its_index_says(monkeypatch):
    """The bytes of the modules differ from the key's: the version is parsed from the files, not taken
    from the index (which a forger made agree with the key)."""
    action.verified_version.cache_clear()
    real = action.verified_version("engine")
    assert real == action.code_version("engine")  # an honest index agrees with the files
    monkeypatch.setattr(action, "code_version", lambda kind: "forged")
    expected = {"version": "forged", "tools": {}, "code": {"trtbuild.steps.engine": "0" * 64}}
    found = action.differences("engine", expected)
    assert found and f"code version {real} here, forged in the key" in found[0]
