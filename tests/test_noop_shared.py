"""A no-op build of many recipes does per folder, per target and per step key what is the same for all
of them, and still sees every change: the project root per folder, the machine's answers per target, a
shared step's action record read once per run (its objects verified at every hit). Real files, a real
cache, real TensorRT-RTX builds."""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import yaml
from conftest import conv_model, recipe_dict, statuses

from trtbuild.commands.build import compile_recipes, recipe_files
from trtbuild.commands.cli import main
from trtbuild.planning import keys
from trtbuild.planning.graph import Remembered, ThisMachine
from trtbuild.recipes.loader import load_recipe
from trtbuild.store.cache import Cache
from trtbuild.store.hashing import digest_json

HOUR_AGO = time.time() - 3600


def write_recipes(folder, names: list[str], model: str = "../models/conv.onnx") -> list:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(recipe_dict(model) | {"name": name}, sort_keys=False))
    return [folder / f"{name}.yaml" for name in names]


def loaded(file):
    return SimpleNamespace(recipe=load_recipe(file).recipe, file=file)


def test_the_project_root_is_found_per_folder_and_follows_the_working_directory(tmp_path, monkeypatch):
    import onnx

    (tmp_path / "models").mkdir()
    onnx.save(conv_model(), tmp_path / "models" / "conv.onnx")
    a, b = write_recipes(tmp_path / "recipes", ["a", "b"])
    (c,) = write_recipes(tmp_path / "recipes" / "deeper", ["c"], "../../models/conv.onnx")
    (d,) = write_recipes(tmp_path / "recipes", ["d"], "conv.onnx")  # names nothing outside its folder
    (tmp_path / "recipes" / "conv.onnx").write_bytes((tmp_path / "models" / "conv.onnx").read_bytes())
    # Outside a repository: the recipe's folder, widened to every folder its relative paths reach.
    assert keys.project_root(loaded(a)) == keys.project_root(loaded(b)) == tmp_path
    assert keys.project_root(loaded(c)) == tmp_path
    assert keys.project_root(loaded(d)) == tmp_path / "recipes"
    # A relative recipe path is taken from the working directory of the moment, not of the first call.
    monkeypatch.chdir(tmp_path / "recipes")
    relative = loaded(a.relative_to(tmp_path / "recipes"))
    assert keys.project_root(relative) == tmp_path
    other = tmp_path / "elsewhere"
    write_recipes(other, ["a"], "conv.onnx")
    (other / "conv.onnx").write_bytes(b"")
    monkeypatch.chdir(other)
    assert keys.stable_root(relative.file) == other
    # A repository holds its recipes: its root, whatever they name.
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (e,) = write_recipes(tmp_path / "repo" / "recipes", ["e"], "../../models/conv.onnx")
    assert keys.project_root(loaded(e)) == tmp_path / "repo"


def test_a_folder_lists_its_recipes_as_before(tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    for name in ("b.yaml", "a.yml", ".hidden.yaml", ".yaml", ".yml", "notes.txt", "c.yaml.bak"):
        (folder / name).write_text("name: x\n")
    (folder / "dir.yaml").mkdir()
    os.mkfifo(folder / "pipe.yaml")
    os.symlink(folder / "b.yaml", folder / "link.yaml")
    os.symlink(folder / "missing.yaml", folder / "dangling.yaml")
    os.symlink("loop.yaml", folder / "loop.yaml")  # a link loop: no recipe, as before
    found = [p.name for p in recipe_files([str(folder)])]
    assert found == sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    assert found == [".hidden.yaml", "a.yml", "b.yaml", "link.yaml"]


class Counting:
    """ThisMachine, counting the questions asked of it."""

    def __init__(self):
        self.asked: list[tuple] = []

    def resolve(self, spec):
        self.asked.append(("resolve", spec))
        return ThisMachine.resolve(spec)

    def builder(self, target):
        self.asked.append(("builder", target.id))
        return ThisMachine.builder(target)

    def runner(self, target, precision):
        self.asked.append(("runner", target.id, precision))
        return ThisMachine.runner(target, precision)


def test_the_machine_is_asked_once_per_target_and_each_step_gets_its_own_context(tmp_path):
    import onnx

    (tmp_path / "models").mkdir()
    onnx.save(conv_model(), tmp_path / "models" / "conv.onnx")
    write_recipes(tmp_path / "recipes", ["a", "b", "c"])
    machine = Counting()
    args = SimpleNamespace(recipes=[str(tmp_path / "recipes")], backend=None, target=None)
    steps, problems = compile_recipes(args, Cache(tmp_path / "cache", make=True), machine)
    assert problems == []
    assert sorted(machine.asked) == sorted(set(machine.asked))  # each question once
    assert [q[0] for q in machine.asked].count("resolve") == 1
    verifies = [s for s in steps if s.name == "verify"]
    assert len(verifies) == 3 and len({id(s.context) for s in verifies}) == 3
    engines = [s for s in steps if s.name == "engine"]
    assert len({id(s.context) for s in engines}) == 3
    remembered = Remembered(machine)
    assert remembered.resolve("tensorrt-rtx") == remembered.resolve("tensorrt-rtx")
    assert remembered.asked is machine.asked  # anything else: the machine's own


def test_a_shared_record_is_read_once_and_its_objects_are_checked_at_every_hit(tmp_path, capsys):
    cache = Cache(tmp_path / "cache", make=True)
    scratch = tmp_path / "plan"
    scratch.write_bytes(b"engine")
    digest, size = cache.ingest(scratch)
    obj = {"digest": digest, "size": size}
    components = {"kind": "engine", "params": {}}
    key = digest_json(components)
    cache.put_action(key, {"key": key, "components": components, "outputs": {"model.plan": obj}})
    reads = []
    original = cache.read_action
    cache.read_action = lambda *a: reads.append(a) or original(*a)
    assert cache.get_action(key)["outputs"]["model.plan"] == obj
    assert cache.get_action(key)["outputs"]["model.plan"] == obj
    assert len(reads) == 1  # the second hit (another recipe's step of this key) reads no record
    path = cache.object_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"edited")  # same size, other bytes: its stat moved
    assert cache.get_action(key) is None  # checked again at this hit, and removed
    assert "does not hold the bytes" in capsys.readouterr().err and not path.exists()
    assert cache.get_action(key) is None and len(reads) == 2  # a failed hit is forgotten: read again
    scratch.write_bytes(b"rebuilt")
    digest, size = cache.ingest(scratch)
    cache.put_action(key, {"key": key, "components": components, "outputs": {"model.plan": {"digest": digest,
                                                                                            "size": size}}})
    assert cache.get_action(key)["outputs"]["model.plan"]["digest"] == digest  # the record written this run


def test_recipes_sharing_steps_see_an_edited_object_and_never_publish_it(tmp_path):
    import onnx

    (tmp_path / "models").mkdir()
    onnx.save(conv_model(), tmp_path / "models" / "conv.onnx")
    files = write_recipes(tmp_path / "recipes", ["a", "b", "c"])
    cache, report = tmp_path / "cache", tmp_path / "report.json"

    def build() -> dict:
        assert main([str(tmp_path / "recipes"), "--cache-dir", str(cache), "--report", str(report), "--quiet"]) == 0
        return json.loads(report.read_text())

    build()
    for path in [*files, *cache.glob("actions/*/*.json"), *cache.glob("state/*.json"),
                 *cache.glob("out/.*/.trtbuild-build.json")]:
        os.utime(path, (HOUR_AGO, HOUR_AGO))  # older than the racy window: the next run logs them
    done = build()
    assert {s["status"] for s in done["steps"] if s["step"] != "verify"} == {"cached"}
    engines = {s["key"] for s in done["steps"] if s["step"] == "engine"}
    assert len(engines) == 1  # one model, one engine step key shared by the three recipes
    plan = next(o for o in json.loads(next(cache.glob(f"actions/*/{engines.pop()}.json")).read_text())[
        "outputs"].items() if o[0] == "model.plan")[1]
    path = cache / "objects" / plan["digest"][:2] / plan["digest"]
    good = path.read_bytes()
    os.chmod(path, 0o644)
    edited = bytes([good[0] ^ 1]) + good[1:]
    path.write_bytes(edited)  # same size, one bit: a plan nobody built
    after = build()
    engine = [s["status"] for s in after["steps"] if s["step"] == "engine"]
    assert engine.count("built") == 1 and engine.count("cached") == 2  # rebuilt once, then shared again
    for name in ("a", "b", "c"):
        assert next((cache / "out" / name).glob("*/model.plan")).read_bytes() != edited  # never the edited plan
    assert statuses({"steps": [s for s in after["steps"] if s["recipe"] == "a"]})["check"] == "cached"
