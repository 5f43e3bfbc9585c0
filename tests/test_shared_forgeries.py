"""A neighbour on a shared cache (a second real uid of the cache's group) tries to turn it against its victim:
make the victim run code (a forged validated-recipe record or build log), serve another recipe's plan (a
record copied under the victim's key), or serve a record whose outputs are not its step's. The victim runs
nothing of theirs and is served nothing wrong: each forgery is a miss (rebuilt) or refused, with a warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, recipe_dict
from helpers import GROUP, run_as

pytestmark = pytest.mark.slow

VICTIM, NEIGHBOUR = 4301, 4302


def as_neighbour(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python `code` as the neighbour (a member of the cache's group), with trtbuild importable."""
    return subprocess.run([sys.executable, "-c", code, *args], user=NEIGHBOUR, group=GROUP, extra_groups=[GROUP],
                          umask=0o002, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO)},
                          timeout=120)


def build(project, uid=VICTIM) -> subprocess.CompletedProcess:
    done = run_as(project, uid, str(project.recipe), "--cache-dir", str(project.cache), umask=0o002)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def engine_record(cache: Path) -> Path:
    for path in cache.glob("actions/*/*.json"):
        if json.loads(path.read_text())["components"]["kind"] == "engine":
            return path
    raise AssertionError("no engine record")


def shown_plan(cache: Path) -> bytes:
    return next((cache / "out" / "conv").glob("*/model.plan")).read_bytes()


def test_a_forged_validated_recipe_or_build_log_runs_nothing(shared):
    marker = shared.root / "pwned"
    shared.root.chmod(0o777)  # the neighbour may leave a file there (the forged command would)
    # Before the victim's first build, the neighbour makes the victim's folder and fills it: a validated
    # record of the victim's recipe bytes saying "run os.system", and the same in the old shared places.
    code = """
import hashlib, json, os, sys
from pathlib import Path
from trtbuild.recipes import records
cache, recipe, uid, evil = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
record = {"recipe": {"name": "conv", "source": {"framework": "pytorch", "entrypoint": "os:system",
          "args": [evil]}, "inputs": {}}, "lines": []}
key = records.key(recipe.read_bytes())
for folder in (cache / "users" / uid / "recipes", cache / "recipes"):
    folder.mkdir(parents=True, exist_ok=True)
    records.write(folder, key, json.dumps(record))
(cache / "users" / uid).chmod(0o777)
(cache / "users" / uid / "recipes").chmod(0o777)
print(key)
"""
    forged = as_neighbour(code, str(shared.cache), str(shared.recipe), str(VICTIM), f"id > {marker}")
    assert forged.returncode == 0, forged.stderr
    assert (shared.cache / "users" / str(VICTIM)).stat().st_uid == NEIGHBOUR
    done = build(shared)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()  # nothing of the neighbour's ran
    assert f"owned by uid {NEIGHBOUR}" in done.stderr and "not used" in done.stderr
    assert "built      conv/engine" in done.stderr  # the victim's own recipe was built


def test_the_victims_own_folder_is_closed_to_the_neighbour(shared):
    assert build(shared).returncode == 0
    mine = shared.cache / "users" / str(VICTIM)
    assert mine.stat().st_uid == VICTIM and mine.stat().st_mode & 0o777 == 0o700
    assert (shared.cache / "users").stat().st_mode & 0o1000  # sticky: no renaming another's folder
    attempt = as_neighbour("""
import os, sys
mine = sys.argv[1]
for action in (lambda: os.listdir(mine), lambda: open(os.path.join(mine, "buildlog", "x"), "w"),
               lambda: os.rename(mine, mine + ".gone"), lambda: os.rmdir(mine)):
    try:
        action()
        print("allowed")
    except PermissionError:
        print("refused")
""", str(mine))
    assert attempt.stdout.split() == ["refused"] * 4, attempt.stdout + attempt.stderr


def test_another_recipes_record_copied_under_the_victims_key_is_not_served(shared):
    assert build(shared).returncode == 0
    ours = engine_record(shared.cache)
    mine = shown_plan(shared.cache)
    # The neighbour builds the same model for other shapes in a cache of its own, then puts that engine's
    # record (key field rewritten) and objects in place of the victim's.
    other = recipe_dict("conv.onnx")
    other["inputs"]["x"]["max"] = [8, 3, 16, 16]
    theirs = shared.root / "theirs.yaml"
    theirs.write_text(json.dumps(other))
    private = shared.root / "neighbour-cache"
    private.mkdir()
    os.chown(private, NEIGHBOUR, GROUP)
    made = run_as(shared, NEIGHBOUR, str(theirs), "--cache-dir", str(private))
    assert made.returncode == 0, made.stderr
    code = """
import json, os, shutil, sys
from pathlib import Path
private, ours = Path(sys.argv[1]), Path(sys.argv[2])
for path in private.glob("actions/*/*.json"):
    record = json.loads(path.read_text())
    if record["components"]["kind"] == "engine":
        break
for obj in record["outputs"].values():
    dest = ours.parents[2] / "objects" / obj["digest"][:2] / obj["digest"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copy(private / "objects" / obj["digest"][:2] / obj["digest"], dest)
record["key"] = ours.stem
tmp = ours.with_name("forged.tmp")
tmp.write_text(json.dumps(record))
os.replace(tmp, ours)
print(record["outputs"]["model.plan"]["digest"])
"""
    forged = as_neighbour(code, str(private), str(ours))
    assert forged.returncode == 0, forged.stderr
    done = build(shared)
    assert done.returncode == 0, done.stderr
    assert "do not hash to its key" in done.stderr and "built      conv/engine" in done.stderr
    assert json.loads(ours.read_text())["key"] == ours.stem  # rebuilt: the victim's own record again
    assert json.loads(ours.read_text())["outputs"]["model.plan"]["digest"] != forged.stdout.strip()
    assert len(shown_plan(shared.cache)) == len(mine)  # the victim's shapes again (TensorRT-RTX: not byte-stable)


@pytest.mark.parametrize("forgery", ["plan-is-onnx", "no-model-json", "extra-output"])
def test_a_record_whose_outputs_are_not_its_steps_is_not_served(shared, forgery):
    assert build(shared).returncode == 0
    ours = engine_record(shared.cache)
    code = """
import json, os, sys
from pathlib import Path
cache, ours, forgery = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
record = json.loads(ours.read_text())
onnx = next(json.loads(p.read_text())["outputs"]["model.onnx"] for p in cache.glob("actions/*/*.json")
            if json.loads(p.read_text())["components"]["kind"] == "simplify")
if forgery == "plan-is-onnx":
    record["outputs"]["model.plan"] = {"digest": onnx["digest"], "size": record["outputs"]["model.plan"]["size"]}
elif forgery == "no-model-json":
    del record["outputs"]["model.json"]
else:
    record["outputs"]["evil.sh"] = onnx
tmp = ours.with_name("forged.tmp")
tmp.write_text(json.dumps(record))
os.replace(tmp, ours)
"""
    forged = as_neighbour(code, str(shared.cache), str(ours), forgery)
    assert forged.returncode == 0, forged.stderr
    done = build(shared)
    assert done.returncode == 0, done.stderr
    assert "built      conv/engine" in done.stderr, done.stderr
    shown = next((shared.cache / "out" / "conv").glob("*/"))
    assert sorted(p.name for p in shown.iterdir()) == ["model.json", "model.plan"]
    assert not shown_plan(shared.cache).startswith(b"\x08")  # not the ONNX model's bytes (a protobuf)
