"""trtbuild gc keeps a nightly runner's cache bounded: it retires superseded results, never the last
build's, and -n says what it would remove first."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import recipe_dict, statuses
from trtbuild.commands.cli import main
from trtbuild.store.retention import parse_age

pytestmark = pytest.mark.slow


def nightly_history(project, nights: int = 3) -> None:
    """One build per night, each with another workspace: a new engine each time."""
    for night in range(nights):
        data = recipe_dict("conv.onnx")
        data["engine"]["workspace"] = f"{64 * (night + 1)}MiB"
        project.write_recipe(data)
        assert project.build()[0] == 0


def engines(project) -> list[dict]:
    return [a for a in project.actions() if a["step"].startswith("engine@")]


def cache_bytes(project) -> int:
    return sum(p.stat().st_size for p in (project.cache / "objects").glob("*/*"))


def age_records(cache, days: float) -> None:
    """Every record made and last used `days` ago."""
    then = time.time() - days * 86400
    for path in (cache / "actions").glob("*/*.json"):
        record = json.loads(path.read_text())
        record["created"] = then
        path.write_text(json.dumps(record))
        os.utime(path, (then, then))


def gc(project, *args: str) -> int:
    return main(["gc", "--cache-dir", str(project.cache), *args])


def test_keep_last_retires_superseded_engines_and_keeps_the_current_build(project, capsys):
    nightly_history(project)
    assert len(engines(project)) == 3
    before = cache_bytes(project)
    capsys.readouterr()
    assert gc(project, "--keep-last", "1", "-n") == 0
    # the superseded engines' model.plan and model.json objects; two workspaces may give the same plan
    superseded = sorted(engines(project), key=lambda a: a["created"], reverse=True)[1:]
    kept = {o["digest"] for a in project.actions() if a not in superseded for o in a["outputs"].values()}
    retired = {o["digest"] for a in superseded for o in a["outputs"].values()} - kept
    assert 2 <= len(retired) <= 4
    assert f"would remove 2 results and {len(retired)} objects" in capsys.readouterr().out
    assert len(engines(project)) == 3 and cache_bytes(project) == before  # -n removes nothing
    assert gc(project, "--keep-last", "1") == 0
    assert f"removed 2 results and {len(retired)} objects" in capsys.readouterr().out
    assert len(engines(project)) == 1 and cache_bytes(project) < before
    code, report = project.build()  # the last build is untouched
    assert code == 0 and set(statuses(report).values()) == {"cached"}


def test_older_than_and_max_size_never_touch_the_last_build(project, capsys):
    nightly_history(project)
    age_records(project.cache, 40)
    assert gc(project, "--older-than", "30d") == 0
    assert len(engines(project)) == 1  # only the current engine survives; check and simplify too
    assert {a["step"] for a in project.actions()} == {"check", "simplify", engines(project)[0]["step"]}
    nightly_history(project, nights=2)
    assert gc(project, "--max-size", "1") == 0  # nothing fits: only what the last build made stays
    assert len(engines(project)) == 1
    code, report = project.build()
    assert code == 0 and set(statuses(report).values()) == {"cached"}


def test_bad_gc_options_are_usage_errors(project, capsys):
    assert gc(project, "--older-than", "soon") == 2
    assert "expected an age such as 30d" in capsys.readouterr().err
    assert gc(project, "--max-size", "big") == 2
    assert parse_age("12h") == 43200 and parse_age("90m") == 5400



def test_a_result_served_again_counts_as_recently_used(project, capsys):
    """Two nights, a month ago; tonight's build goes back to the first night's engine (a hit), then
    returns to the second's. The first engine is not the current one, but it was used tonight."""
    nightly_history(project, nights=2)
    age_records(project.cache, 40)
    first = recipe_dict("conv.onnx")
    first["engine"]["workspace"] = "64MiB"
    project.write_recipe(first)
    code, report = project.build()
    assert code == 0 and next(s["status"] for s in report["steps"] if s["step"] == "engine") == "cached"
    second = recipe_dict("conv.onnx")
    second["engine"]["workspace"] = "128MiB"
    project.write_recipe(second)
    assert project.build()[0] == 0
    assert gc(project, "--older-than", "30d") == 0
    assert len(engines(project)) == 2  # the first engine was used tonight: kept


def test_gc_applies_the_same_policy_to_the_remote_cache(project, tmp_path, capsys):
    remote = tmp_path / "remote"
    for night in range(3):
        data = recipe_dict("conv.onnx")
        data["engine"]["workspace"] = f"{64 * (night + 1)}MiB"
        project.write_recipe(data)
        assert project.build("--remote", remote.as_uri())[0] == 0
    remote_engines = lambda: [p for p in (remote / "actions").glob("*/*.json") if '"step":"engine@' in p.read_text()]
    assert len(remote_engines()) == 3
    capsys.readouterr()
    assert gc(project, "--keep-last", "1", "--remote", remote.as_uri(), "-n") == 0
    out = capsys.readouterr().out
    assert f"remote {remote.as_uri()}: would remove 2 results and 0 objects" in out  # objects: an hour's grace
    assert len(remote_engines()) == 3
    assert gc(project, "--keep-last", "1", "--remote", remote.as_uri()) == 0
    assert len(remote_engines()) == 1 and len(engines(project)) == 1
    (remote / "actions" / "ab").mkdir(exist_ok=True)  # a hostile record names nothing and keeps nothing alive
    (remote / "actions" / "ab" / ("ab" * 32 + ".json")).write_text('{"outputs": {"../x": {"digest": "zz"}}}')
    assert gc(project, "--remote", remote.as_uri()) == 0


def test_gc_drops_recipe_records_older_than_a_week(project, capsys):
    assert project.build()[0] == 0
    records = list((project.mine / "recipes").glob("*.json"))
    assert len(records) == 1
    os.utime(records[0], (time.time() - 8 * 86400,) * 2)
    assert gc(project) == 0
    assert not records[0].exists()
    code, report = project.build()  # validated again, and the steps are still cached
    assert code == 0 and set(statuses(report).values()) == {"cached"} and records[0].exists()
