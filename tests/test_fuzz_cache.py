"""Fuzz: hostile cache files. Each kind of file a cache holds (an action record, a state file, the stat
cache, an out/ manifest, the build log, a validated recipe, the tool versions, the GPU record, the code
index in the cache and under HOME, an object, the cache lock, the objects/ and locks/ folders) is replaced
by a FIFO, a device, a link to /dev/zero, a link loop, a folder, a file past its size bound and JSON nested
100,000 deep; a build of the recipe then ends in exit 0 with the right outputs, never a hang or a
traceback, and so does the build after it (a folder where a file belongs is replaced, not a failure of
every later run). Each run tries every kind of file and every form, each kind in two forms drawn with the
printed seed (tests/fuzz_seed.py): all the pairs over runs. bench/README.md records the figures."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, Project, conv_model, recipe_dict
from fuzz_seed import cover, seeded

pytestmark = pytest.mark.slow

FORMS = ("fifo", "device", "zero-link", "loop", "folder", "huge", "deep")
FOLDERS = ("objects", "locks", "users-mine")  # kinds that are folders: replaced by a link elsewhere
HOUR_AGO = 1_700_000_000
PER_KIND = 2  # forms tried on each kind of file per run


def forms_of(kind: str) -> tuple[str, ...]:
    if kind in FOLDERS:
        return ("link-elsewhere",)
    if kind in ("object", "cache-lock"):  # not read as JSON: a huge object is hashed (and found wrong), a lock never read
        return tuple(f for f in FORMS if f not in ("huge", "deep"))
    return FORMS


def sample(names: list[str], rng) -> list[tuple[str, str]]:
    """(kind, form) cases: every kind of file in PER_KIND of its forms, every form on some kind."""
    files = [k for k in names if k not in FOLDERS]
    while True:  # each file kind one form, every form dealt out: drawn again where a kind cannot take its form
        first = [(kind, form) for form, kind in cover(list(FORMS), files, rng)]
        if all(form in forms_of(kind) for kind, form in first):
            break
    more = [(kind, f) for kind, form in first for f in rng.sample([f for f in forms_of(kind) if f != form], PER_KIND - 1)]
    return first + more + [(kind, "link-elsewhere") for kind in names if kind in FOLDERS]


def kinds(cache: Path, home: Path) -> dict[str, Path]:
    """Where each kind of file lies in a cache built once (the first of each)."""
    mine = cache / "users" / str(os.geteuid())
    engine = next(p for p in cache.glob("actions/*/*.json") if json.loads(p.read_text())["components"]["kind"] == "engine")
    plan = json.loads(engine.read_text())["outputs"]["model.plan"]["digest"]
    return {
        "action-record": engine, "state": cache / "state" / "conv.json", "statcache": cache / "statcache.json",
        "manifest": next(cache.glob("out/.conv.*/.trtbuild-build.json")),
        "buildlog": next(p for p in mine.glob("buildlog/*") if p.suffix != ".lock"),
        "validated-recipe": next(mine.glob("recipes/*.json")), "versions": mine / "versions.json",
        "gpus": mine / "gpus.json", "code-index": next(cache.glob("code/*.json")),
        "user-code-index": next(home.glob(".cache/trtbuild/code/*.json")),
        "object": cache / "objects" / plan[:2] / plan, "cache-lock": cache / "locks" / "cache.lock",
        "objects": cache / "objects", "locks": cache / "locks", "users-mine": mine,
    }


def damage(path: Path, form: str, elsewhere: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "fifo":
        os.mkfifo(path)
    elif form == "device":
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))  # /dev/zero's device
    elif form == "zero-link":
        path.symlink_to("/dev/zero")
    elif form == "loop":
        path.symlink_to(path.name)
    elif form == "folder":
        (path / "inside").mkdir(parents=True)
    elif form == "huge":
        with open(path, "wb") as f:
            f.truncate((1 << 30) + 1)  # sparse: past every bound (the build log's is 1 GiB)
    elif form == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif form == "link-elsewhere":
        elsewhere.mkdir(exist_ok=True)
        path.symlink_to(elsewhere)


def trtbuild(project: Project, cache: Path, home: Path) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run([sys.executable, "-m", "trtbuild", "build", str(project.recipe), "--cache-dir", str(cache)],
                              capture_output=True, text=True, timeout=90, cwd=project.root,
                              env=os.environ | {"HOME": str(home), "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return None


def run_cases(root: Path, rng=None) -> list[dict]:
    """The cases of sample(), or with no `rng` every kind in every form (as bench/fuzz.py runs them)."""
    project = Project(root)
    project.write_model(conv_model())
    project.write_recipe(recipe_dict("conv.onnx"))
    base_home = root / "home"
    base_home.mkdir()
    for _ in range(2):  # the second fills the build log (files aged past the racy window first)
        assert trtbuild(project, project.cache, base_home).returncode == 0
        for path in [*project.cache.rglob("*.json"), project.recipe]:
            os.utime(path, (HOUR_AGO, HOUR_AGO), follow_symlinks=False)
    (project.cache / "users" / str(os.geteuid()) / "gpus.json").touch()  # made only where pynvml is: a stand-in
    results = []
    names = list(kinds(project.cache, base_home))
    for kind, form in sample(names, rng) if rng else [(k, f) for k in names for f in forms_of(k)]:
        cache, home = root / "case" / "cache", root / "case" / "home"
        shutil.rmtree(root / "case", ignore_errors=True)
        shutil.copytree(project.cache, cache, symlinks=True)
        shutil.copytree(base_home, home, symlinks=True)
        for out in (cache / "out").iterdir():  # out/conv points into its own cache
            if out.is_symlink():
                out.unlink()
                out.symlink_to(os.readlink(project.cache / "out" / out.name))
        damage(kinds(cache, home)[kind], form, root / "case" / "elsewhere")
        runs = [trtbuild(project, cache, home) for _ in range(2)]
        outcome = ("hang" if any(r is None for r in runs) else
                   "traceback" if any("Traceback (most recent call last)" in r.stderr for r in runs) else
                   f"exit {runs[0].returncode}/{runs[1].returncode}")
        plan = next(cache.glob("out/conv/*/model.plan"), None)
        elsewhere = root / "case" / "elsewhere"
        results.append({"kind": kind, "form": form, "outcome": outcome, "plan": bool(plan and plan.stat().st_size),
                        "untouched": not elsewhere.exists() or not any(elsewhere.iterdir()),
                        "stderr": "" if runs[0] is None else runs[0].stderr[-800:]})
    return results


def test_hostile_cache_files_are_a_miss_never_a_hang_or_a_traceback(tmp_path):
    rng, told = seeded("hostile-cache-files")
    results = run_cases(tmp_path, rng)
    print(json.dumps(Counter(r["outcome"] for r in results)))
    bad = [f"{r['kind']} as {r['form']}: {r['outcome']}, plan shown: {r['plan']}: {r['stderr']}" for r in results
           if r["outcome"] != "exit 0/0" or not r["plan"] or not r["untouched"]]
    assert bad == [], told
    names = set(kinds(tmp_path / "cache", tmp_path / "home"))
    assert {r["kind"] for r in results} == names and len(names) == 15, told
    assert {r["form"] for r in results} == {*FORMS, "link-elsewhere"}, told
    assert len(results) == (len(names) - len(FOLDERS)) * PER_KIND + len(FOLDERS)
