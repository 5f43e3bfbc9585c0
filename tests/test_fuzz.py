"""Fuzz: a few hundred generated hostile recipes and models (tests/hostile.py, fixed seed) through the real CLI,
each under a time and an address-space limit (tests/fuzz_driver.py). Every one ends in a message and an exit
code (2 for a recipe's mistake): no traceback, no hang, no crash, no file written outside the cache, and no
byte of a file outside a model's folder in the cache. bench/README.md records the figures."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from hostile import model_cases, recipe_cases, world

TESTS = Path(__file__).resolve().parent
RECIPES = 300  # mutated recipes, besides the ~100 structural ones and the recipe files that are not files
BUILDS = ("ext-inside", "random-100", "flipped", "dim-huge", "evil-op", "weight-type", "deep-if", "ext-offset")
MEMORY = 4 << 30  # bytes of address space per process, a build's workers included (a real build maps ~1.5 GiB)
RECIPE_BUILDS = 8  # of the generated recipes that are valid, how many are built for real
LIMITS = {"recipe": 20, "model": 30, "build": 120}  # seconds per case
# Models whose fault is in what the recipe points at: refused at planning with exit 2.
REFUSED = ("ext-link-out", "ext-folder-out", "ext-up", "ext-absolute", "ext-etc", "ext-fifo", "ext-zero", "ext-missing",
           "ext-empty", "ext-dot", "ext-long", "ext-nul", "ext-bad-number", "ext-abc")
# Recipes that once passed as valid or crashed: each must be refused with exit 2.
REFUSED_RECIPES = ("s-binary.yaml", "s-step-timeout-bool.yaml", "s-int-4301.yaml", "s-python-tag.yaml")


def run_fuzz(folder: Path, source: Path = TESTS.parent) -> tuple[list[dict], list[str]]:
    """Generate and run every case under `folder` with the trtbuild package in `source`; (results, files
    written outside the cache)."""
    recipes, models, cache = folder / "recipes", folder / "models", folder / "cache"
    keep = world(recipes)
    cases = recipe_cases(recipes, RECIPES) + model_cases(models, BUILDS)
    for case in cases:
        case["limit"] = LIMITS["build" if case["build"] else case["kind"]]
    temp, home, work = folder / "tmp", folder / "home", folder / "cwd"
    for d in (temp, home, work):
        d.mkdir()
    before = _listing(folder, cache)
    spec = folder / "cases.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "ORT_"))}
    env |= {"PYTHONPATH": str(source), "TMPDIR": str(temp), "HOME": str(home)}
    results = _run(cases, spec, cache, env, work)
    valid = [case | {"build": True, "limit": LIMITS["build"]} for case, result in zip(cases, results)
             if case["kind"] == "recipe" and result.get("code") == 0]
    chosen = valid[::max(1, len(valid) // RECIPE_BUILDS)][:RECIPE_BUILDS]  # spread over the mutations
    results += _run(chosen, spec, cache, env, work)  # valid recipes, numbers at the edges: built for real
    keep.clear()
    outside = sorted(str(p) for p in set(_listing(folder, cache)) - set(before))
    outside += [str(p) for d in (temp, home, work) for p in d.rglob("*")]
    # trtbuild's facts about its own modules, kept per user (store/code.py): nothing of a recipe or model
    mine = home / ".cache" / "trtbuild" / "code"
    allowed = {str(p) for p in (home / ".cache", mine.parent, mine)} | {str(p) for p in mine.glob("*.json")}
    return results, [p for p in outside if p not in allowed]


def _run(cases: list[dict], spec: Path, cache: Path, env: dict, work: Path) -> list[dict]:
    spec.write_text(json.dumps({"cases": cases, "cache": str(cache)}))
    results: dict[int, dict] = {}
    first = 0
    while first < len(cases):
        first = _drive(spec, first, cases, results, env, work)
    return [results[i] for i in range(len(cases))]


def _drive(spec: Path, first: int, cases: list[dict], results: dict, env: dict, work: Path) -> int:
    """Run cases from `first` in one driver process until it ends or a case outlives its limit; the next to run."""
    proc = subprocess.Popen([sys.executable, str(TESTS / "fuzz_driver.py"), str(spec), str(first), str(MEMORY)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=work, env=env, text=True,
                            start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put("")], daemon=True).start()
    current = None
    while True:
        limit = cases[current]["limit"] + 30 if current is not None else 120
        try:
            line = lines.get(timeout=limit)
        except queue.Empty:  # the alarm did not stop it: stuck in native code
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            results[current] = cases[current] | {"outcome": "hang", "code": None, "stderr": ""}
            return current + 1
        if not line:
            code = proc.wait()
            if current is not None and current not in results:  # it died within the case: a crash
                results[current] = cases[current] | {"outcome": f"crash ({code})", "code": None, "stderr": ""}
                return current + 1
            return len(cases)
        message = json.loads(line)
        if "start" in message:
            current = message["start"]
        else:
            results[current] = message


def _listing(folder: Path, cache: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if cache not in p.parents and p != cache and p.name != "cases.json"]


def defects(results: list[dict]) -> list[str]:
    found = []
    for r in results:
        what = f"{r['kind']} {r['id']}{' (build)' if r['build'] else ''}"
        allowed = ({0, 1} if r["build"] else {2} if r["id"] in REFUSED_RECIPES else {0, 2}) if r["kind"] == "recipe" \
            else {2} if r["id"] in REFUSED else {0, 1, 2}
        if r.get("outcome"):
            found.append(f"{what}: {r['outcome']}: {r['stderr'][-600:]}")
        elif "Traceback (most recent call last)" in r["stderr"]:
            found.append(f"{what}: traceback: {r['stderr'][-600:]}")
        elif r["code"] not in allowed:
            found.append(f"{what}: exit {r['code']}, expected one of {sorted(allowed)}: {r['stderr'][-300:]}")
        elif r["code"] == 2 and Path(r["id"]).name not in r["stderr"] and "recipe.yaml" not in r["stderr"]:
            found.append(f"{what}: exit 2 without naming the recipe: {r['stderr'][-300:]}")
    return found


def figures(results: list[dict]) -> dict:
    by_kind: dict = {}
    for r in results:
        kind = r["kind"] + (" build" if r["build"] else "")
        entry = by_kind.setdefault(kind, {"cases": 0, "exit": Counter(), "max_s": 0.0, "total_s": 0.0, "max_rss_mb": 0})
        entry["cases"] += 1
        entry["exit"][str(r.get("code"))] += 1
        entry["max_s"] = max(entry["max_s"], r.get("seconds", 0))
        entry["total_s"] = round(entry["total_s"] + r.get("seconds", 0), 1)
        entry["max_rss_mb"] = max(entry["max_rss_mb"], r.get("maxrss_kb", 0) // 1024)
    return by_kind


def test_fuzz_hostile_recipes_and_models(tmp_path):
    results, outside = run_fuzz(tmp_path)
    print(json.dumps(figures(results), indent=1, default=dict))
    assert len(results) > RECIPES
    assert defects(results) == []
    assert outside == []
    objects = [p.read_bytes() for p in (tmp_path / "cache" / "objects").glob("*/*")]
    assert objects  # the builds stored something: the check below looked at real objects
    assert not any(b"SECRET" in data for data in objects)
    codes = Counter(r["code"] for r in results if r["kind"] == "recipe")
    assert codes[2] > RECIPES // 2  # most generated recipes are broken: the fuzz reaches the checks
