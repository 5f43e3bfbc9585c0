"""trtbuild gc keeps a nightly runner's cache bounded: it retires superseded results, never the last
build's, and -n says what it would remove first."""

from __future__ import annotations

import json
import time

import pytest

from conftest import recipe_dict, statuses
from trtbuild.cli import main
from trtbuild.retention import parse_age

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
    for path in (project.cache / "actions").glob("*/*.json"):  # a month of nights ago
        record = json.loads(path.read_text())
        record["created"] = time.time() - 40 * 86400
        path.write_text(json.dumps(record))
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

