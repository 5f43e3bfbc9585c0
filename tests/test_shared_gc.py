"""gc on a shared cache: it cannot race a publish or a push, trusts no writer's clock, counts pulls as
uses, counts everything it stores against --max-size (and says when it cannot meet it), and
`gc DIR...` keeps what the recipes there make now, retiring the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, Project, conv_model, recipe_dict, statuses
from helpers import second_machine
from trtbuild.commands.cli import main
from trtbuild.store.hashing import digest_file
from trtbuild.store.publish import read_manifest

pytestmark = pytest.mark.slow


def gc(project, *args: str) -> int:
    return main(["gc", "--cache-dir", str(project.cache), *args])


def _engine_key(report: dict) -> str:
    return next(s["key"] for s in report["steps"] if s["step"] == "engine")


def test_gc_racing_builds_never_leaves_out_on_an_old_build(project):
    """Builds that change the recipe each round, with gc running in a loop beside them: after each build,
    out/ shows that build, whole."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    loop = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom trtbuild.commands.cli import main\n"
        "end = time.time() + 600\n"
        "while time.time() < end:\n"
        f"    assert main(['gc', '--cache-dir', {str(project.cache)!r}, '--keep-last', '1']) == 0\n")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for round in range(4):
            data = recipe_dict("conv.onnx")
            data["engine"]["workspace"] = f"{64 * (round + 1)}MiB"
            project.write_recipe(data)
            code, report = project.build()
            assert code == 0
            manifest = read_manifest(project.cache / "out" / "conv")
            assert {s["key"] for s in manifest["steps"].values()} >= {_engine_key(report)}
            for rel, shown in manifest["files"].items():
                assert digest_file(project.cache / "out" / "conv" / rel) == shown["digest"], rel
            assert loop.poll() is None, loop.stderr.read()
    finally:
        loop.kill()
        _, err = loop.communicate()
    assert "Traceback" not in err, err


def test_a_record_dated_in_the_future_does_not_outlive_its_use(project, capsys):
    """A runner whose clock is a year fast: its record's `created` is ignored; the cache's clock decides."""
    assert project.build()[0] == 0
    data = recipe_dict("conv.onnx")
    data["engine"]["workspace"] = "128MiB"
    project.write_recipe(data)
    assert project.build()[0] == 0  # the first engine is no longer current
    month_ago = time.time() - 30 * 86400
    for path in (project.cache / "actions").glob("*/*.json"):
        record = json.loads(path.read_text())
        if record["step"].startswith("engine@") and record["components"]["params"]["workspace"] != 128 << 20:
            record["created"] = time.time() + 365 * 86400
            path.write_text(json.dumps(record))
            os.utime(path, (month_ago, month_ago))
            stale = path
    assert gc(project, "--older-than", "7d") == 0
    assert not stale.exists()
    code, report = project.build()
    assert code == 0 and set(statuses(report).values()) == {"cached"}


def test_max_size_counts_out_and_says_what_it_could_not_free(project, capsys):
    assert project.build()[0] == 0
    objects = sum(p.stat().st_size for p in (project.cache / "objects").glob("*/*"))
    shown = sum(p.stat().st_size for p in (project.cache / "out").rglob("*") if p.is_file() and not p.is_symlink())
    assert shown > 0
    capsys.readouterr()
    assert gc(project, "--max-size", str(objects)) == 0  # the objects alone fit; with out/ they do not
    out, err = capsys.readouterr()
    assert "could not meet --max-size" in err and "held by the current builds" in err
    code, report = project.build()
    assert code == 0 and set(statuses(report).values()) == {"cached"}  # the current build is never retired


def test_gc_dir_keeps_what_the_recipes_make_now_and_retires_the_rest(project, capsys):
    recipes = project.root / "recipes"
    recipes.mkdir()
    os.replace(project.recipe, recipes / "conv.yaml")
    os.replace(project.root / "conv.onnx", recipes / "conv.onnx")
    project.recipe = recipes / "conv.yaml"
    assert project.build()[0] == 0
    gone = dict(recipe_dict("conv.onnx"), name="retired")
    gone["engine"]["workspace"] = "32MiB"
    (recipes / "retired.yaml").write_text(json.dumps(gone))
    code, report = main_build(recipes, project.cache)
    assert code == 0 and (project.cache / "out" / "retired").exists()
    before = len(list((project.cache / "actions").glob("*/*.json")))
    (recipes / "retired.yaml").unlink()
    capsys.readouterr()
    assert gc(project, str(recipes)) == 0
    out = capsys.readouterr().out
    assert "out/ of retired" in out
    assert not (project.cache / "out" / "retired").exists()
    assert not (project.cache / "state" / "retired.json").exists()
    after = [json.loads(p.read_text()) for p in (project.cache / "actions").glob("*/*.json")]
    assert len(after) < before and not any(r["recipe"] == "retired" and r["step"].startswith("engine")
                                           for r in after)
    code, report = project.build()
    assert code == 0 and set(statuses(report).values()) == {"cached"}


def main_build(recipes: Path, cache: Path) -> tuple[int, dict]:
    report = recipes.parent / "report.json"
    code = main(["build", str(recipes), "--cache-dir", str(cache), "--report", str(report)])
    return code, json.loads(report.read_text())


def test_remote_gc_marks_then_sweeps_and_never_sweeps_what_a_push_wrote_after_the_mark(project, tmp_path, capsys):
    from trtbuild.store.cache import Cache
    from trtbuild.store.remote import Remote

    remote = tmp_path / "remote"
    url = remote.as_uri()
    assert project.build("--remote", url)[0] == 0
    [engine] = [p for p in (remote / "actions").glob("*/*.json") if '"step":"engine@' in p.read_text()]
    record = json.loads(engine.read_text())
    plan = record["outputs"]["model.plan"]["digest"]
    engine.unlink()  # the engine's objects are now unreferenced
    capsys.readouterr()
    assert gc(project, "--remote", url, "--grace", "0s", "-n") == 0  # a dry run says what it would mark
    out = capsys.readouterr().out
    assert "would mark " in out and "(-n marks nothing)" in out and "objects marked" not in out
    assert not (remote / "gc").exists() or not any((remote / "gc").iterdir())
    assert gc(project, "--remote", url, "--grace", "0s") == 0  # first gc: marks, deletes nothing
    assert "unreferenced objects marked" in capsys.readouterr().out
    plan_object = remote / "objects" / plan[:2] / plan
    assert plan_object.exists()
    # A push on its way: it sees the mark and uploads the object again; its record is not written yet.
    pusher = Remote(url, warn=lambda text: None)
    time.sleep(0.05)  # a later mtime than the mark's, as a clock tick would give
    for obj in record["outputs"].values():
        digest = obj["digest"]
        assert digest in pusher._condemned_now()
        pusher.put_object(Cache(project.cache).object_path(digest), digest, again=True)
    assert gc(project, "--remote", url, "--grace", "0s") == 0  # second gc: sweeps, but not what was re-uploaded
    assert plan_object.exists()
    record_io = [p for p in (remote / "actions").glob("*/*.json")]
    assert record_io  # the other steps' records are untouched
    engine.parent.mkdir(parents=True, exist_ok=True)
    engine.write_text(json.dumps(record))  # the push completes
    code, pulled = second_machine(project).build("--remote", url)
    assert code == 0 and set(statuses(pulled).values()) == {"cached"}


def test_remote_gc_sweeps_what_stays_unreferenced(project, tmp_path, capsys):
    remote = tmp_path / "remote"
    url = remote.as_uri()
    assert project.build("--remote", url)[0] == 0
    [engine] = [p for p in (remote / "actions").glob("*/*.json") if '"step":"engine@' in p.read_text()]
    plan = json.loads(engine.read_text())["outputs"]["model.plan"]["digest"]
    engine.unlink()
    assert gc(project, "--remote", url, "--grace", "1h") == 0
    assert gc(project, "--remote", url, "--grace", "1h") == 0  # within the grace: nothing swept
    assert (remote / "objects" / plan[:2] / plan).exists()
    assert gc(project, "--remote", url, "--grace", "0s") == 0
    assert not (remote / "objects" / plan[:2] / plan).exists()


def test_remote_older_than_counts_pulls(project, tmp_path, capsys):
    remote = tmp_path / "remote"
    url = remote.as_uri()
    assert project.build("--remote", url)[0] == 0
    month_ago = time.time() - 30 * 86400
    for path in (remote / "actions").glob("*/*.json"):
        os.utime(path, (month_ago, month_ago))
    other = second_machine(project)
    code, pulled = other.build("--remote", url)  # a pull is a use
    assert code == 0 and set(statuses(pulled).values()) == {"cached"}
    assert main(["gc", "--cache-dir", str(tmp_path / "nobody"), "--remote", url, "--older-than", "7d"]) == 0
    assert len(list((remote / "actions").glob("*/*.json"))) == 3
    for path in (remote / "used").glob("*/*"):
        os.utime(path, (month_ago, month_ago))
    assert main(["gc", "--cache-dir", str(tmp_path / "nobody"), "--remote", url, "--older-than", "7d"]) == 0
    assert not list((remote / "actions").glob("*/*.json"))


def test_remote_gc_racing_pushes_and_pulls_in_a_loop(project, tmp_path):
    """gc (no grace at all, the worst case) in a loop beside a machine pushing a new engine each round
    and a fresh machine pulling it: every run ends with exit 0, without a traceback; what the fresh
    machine shows is what its records name, and nothing lands outside the caches."""
    remote = tmp_path / "remote"
    url = remote.as_uri()
    env = os.environ | {"PYTHONPATH": str(REPO)}
    loop = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom trtbuild.commands.cli import main\n"
        "end = time.time() + 600\n"
        "while time.time() < end:\n"
        f"    assert main(['gc', '--cache-dir', {str(tmp_path / 'gc-cache')!r}, '--remote', {url!r}, "
        "'--keep-last', '1', '--grace', '0s']) == 0\n")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    before = set(tmp_path.parent.iterdir())
    try:
        for round in range(4):
            data = recipe_dict("conv.onnx")
            data["engine"]["workspace"] = f"{64 * (round + 1)}MiB"
            project.write_recipe(data)
            assert project.build("--remote", url)[0] == 0
            reader = Project(tmp_path / f"reader-{round}")
            reader.root.mkdir()
            reader.write_model(conv_model())
            reader.write_recipe(data)
            code, report = reader.build("--remote", url)
            assert code == 0
            for step in report["steps"]:
                for name, path in step["outputs"].items():
                    record = json.loads((reader.cache / "actions" / step["key"][:2] / f"{step['key']}.json").read_text())
                    assert digest_file(path) == record["outputs"][name]["digest"], (step["step"], name)
            assert loop.poll() is None, loop.stderr.read()
    finally:
        loop.kill()
        _, err = loop.communicate()
    assert "Traceback" not in err, err
    assert set(tmp_path.parent.iterdir()) == before
