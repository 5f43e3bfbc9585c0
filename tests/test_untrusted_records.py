"""Every file trtbuild reads back from its own cache is untrusted input: a record copied over another
key's, one naming a path that climbs out, `{}` / `[]` / `null` records, state and stat-cache files of
the wrong shape. Each is a miss with a warning (the step rebuilds and its record replaces the bad
one), never a wrong plan served, a file written outside the cache, or a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import statuses
from trtbuild.store.hashing import digest_file


def _record_of(project, step: str) -> Path:
    [path] = [p for p in (project.cache / "actions").glob("*/*.json")
              if json.loads(p.read_text())["step"].startswith(step)]
    return path


def _plan(report: dict) -> str:
    return next(s for s in report["steps"] if s["step"] == "engine")["outputs"]["model.plan"]


def test_a_record_copied_over_another_keys_record_is_never_served(project, capsys):
    assert project.build()[0] == 0
    engine = _record_of(project, "engine")
    simplify = _record_of(project, "simplify")
    engine.write_bytes(simplify.read_bytes())  # a valid record, of another step, under the engine's key
    capsys.readouterr()
    code, report = project.build()
    err = capsys.readouterr().err
    assert code == 0 and statuses(report)["engine"] == "built"
    assert "rejected (its key is not the step's); rebuilding the step" in err and "Traceback" not in err
    assert json.loads(engine.read_text())["step"].startswith("engine")  # replaced by the rebuilt step's record
    assert Path(_plan(report)).read_bytes()[:4] != b"\x08\x0a"  # a plan, not the simplified ONNX model
    assert digest_file(_plan(report)) == json.loads(engine.read_text())["outputs"]["model.plan"]["digest"]


@pytest.mark.parametrize("name", ["../../../../escaped.plan", "/tmp/escaped.plan", ".hidden", "a/b"])
def test_a_record_naming_an_output_outside_its_folder_is_a_miss(project, tmp_path, capsys, name):
    assert project.build()[0] == 0
    engine = _record_of(project, "engine")
    record = json.loads(engine.read_text())
    record["outputs"][name] = record["outputs"].pop("model.plan")
    engine.write_text(json.dumps(record))
    capsys.readouterr()
    code, report = project.build()
    err = capsys.readouterr().err
    assert code == 0 and statuses(report)["engine"] == "built"
    assert "is not a plain file name" in err and "Traceback" not in err
    assert not list(tmp_path.parent.rglob("escaped.plan")) and not Path("/tmp/escaped.plan").exists()


@pytest.mark.parametrize("text", ["{}", "[]", "null", "\"x\"", "{\"outputs\": 3}", "{not json"])
def test_malformed_records_state_and_stat_cache_are_misses_with_a_warning(project, capsys, text):
    from trtbuild.commands.cli import main

    assert project.build()[0] == 0
    for path in [*(project.cache / "actions").glob("*/*.json"), *(project.cache / "state").glob("*.json"),
                 project.cache / "statcache.json"]:
        path.write_text(text)
    capsys.readouterr()
    code, report = project.build()
    err = capsys.readouterr().err
    assert code == 0 and set(statuses(report).values()) == {"built"}, err
    assert "Traceback" not in err and "rebuilding the step" in err
    code, again = project.build()  # every bad file was replaced
    assert code == 0 and set(statuses(again).values()) == {"cached"}
    assert "rebuilding" not in capsys.readouterr().err
    for path in (project.cache / "actions").glob("*/*.json"):
        path.write_text(text)
    assert main(["status", str(project.recipe), "--cache-dir", str(project.cache)]) == 1  # missing, no traceback
    assert main(["gc", "--cache-dir", str(project.cache), "--keep-last", "1"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "malformed records" in out
    assert not list((project.cache / "actions").glob("*/*.json"))  # they named nothing


def test_state_entries_of_the_wrong_shape_are_dropped(project, capsys):
    assert project.build()[0] == 0
    [state] = (project.cache / "state").glob("*.json")
    entries = json.loads(state.read_text())
    first = next(iter(entries))
    entries[first] = {"key": "../x", "components": [], "time": "yesterday"}
    state.write_text(json.dumps(entries))
    capsys.readouterr()
    code, report = project.build()
    err = capsys.readouterr().err
    assert code == 0 and set(statuses(report).values()) == {"cached"}
    assert "ignoring the malformed entry" in err and "Traceback" not in err
    assert json.loads(state.read_text())[first]["key"] == next(  # rewritten by the no-op build
        s["key"] for s in report["steps"] if first.startswith(s["step"]))


def test_an_edited_recipe_record_never_changes_the_build(project, capsys):
    assert project.build()[0] == 0
    [path] = (project.mine / "recipes").glob("*.json")
    stored = json.loads(path.read_text())
    record = json.loads(stored["record"])
    record["recipe"]["values"]["engine"]["workspace"] = 1 << 20  # what the recipe file does not say
    stored["record"] = json.dumps(record)
    path.write_text(json.dumps(stored))
    capsys.readouterr()
    code, report = project.build()
    err = capsys.readouterr().err
    assert code == 0 and set(statuses(report).values()) == {"cached"}  # the recipe's own workspace
    assert "is not the one stored under its key" in err
    assert json.loads(json.loads(path.read_text())["record"])["recipe"]["values"]["engine"]["workspace"] != 1 << 20
