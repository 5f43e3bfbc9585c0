"""What out/<recipe>/ shows after a run: for each step of the recipe, its own targets and those the run
was asked for, the outputs of the step's current key when the cache has them, whatever subset the run
built. A step whose forced rerun failed keeps its cached result (same key); a step whose current key
never built, or whose upstream has none, is not shown. A later step's model.onnx (and its external
data) replaces an earlier one's in the same folder. Written by trtbuild.store.publish, in one swap.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from trtbuild.errors import TrtbuildError
from trtbuild.planning.graph import Step
from trtbuild.planning.keys import key_components, step_key
from trtbuild.store.publish import publish_recipe

DELIVERED = ("built", "cached")  # the runner's statuses of a step whose outputs exist

Lookup = Callable[[Step, str], "dict | None"]  # (step, key) -> its verified action record, or None


def replaced(steps: list[Step]) -> set[tuple[str, str, str]]:
    """(recipe, step id, output name) of each file a later step of its recipe replaces in the same out/
    folder (an export's model.onnx under the simplified one), in the order publish_current shows them: a
    report names the cached file for those, not out/."""
    from trtbuild.steps import outputs_of

    shown: dict[tuple[str, str], Step] = {}  # each step once, first seen first, as publish_current takes them
    for step in steps:
        shown.setdefault((step.recipe.recipe.name, step.id), step)
    names: dict = {}  # kind -> (the names it may write, the names it replaces): asked once per kind, not per step
    later: dict[tuple[str, object], set[str]] = {}  # (recipe, folder) -> names a later step writes there
    gone = set()
    for (recipe, sid), step in reversed(shown.items()):
        kind = id(step.kind)  # a kind module lives as long as the run
        if kind not in names:
            always, maybe, _ = outputs_of(step.kind)
            names[kind] = ((*always, *maybe), {*always, f"{step.kind.MAIN_OUTPUT}.data"})
        writes, replaces = names[kind]
        there = later.setdefault((recipe, step.publish_dir), set())
        gone.update((recipe, sid, name) for name in writes if name in there)
        there |= replaces
    return gone


def publish_current(cache, steps: list[Step], results: dict, declared: list[Step], lookup: Lookup,
                    report: Callable[[str], None]) -> list:
    """Publish every recipe of the run; return the results it built or found but did not deliver (a
    publish that failed, an engine with no plan), each with its outputs cleared and an error."""
    recipes: dict[str, dict[str, Step]] = {}  # recipe -> step id -> step, dependencies first
    for step in [*declared, *steps]:
        recipes.setdefault(step.recipe.recipe.name, {}).setdefault(step.id, step)
    ran: dict[str, dict[str, object]] = {}  # recipe -> step id -> this run's result
    for s in steps:
        ran.setdefault(s.recipe.recipe.name, {})[s.id] = results[s]
    undelivered = []
    for recipe, shown in recipes.items():
        files, states, current, mine = {}, {}, {}, ran.get(recipe, {})
        for sid, step in shown.items():
            key, record = current[sid] = _current(cache, step, mine.get(sid), current, lookup)
            states[sid] = {"key": key, "current": record is not None}
            if record is None:
                continue
            parts = step.publish_dir.parts  # out/<recipe>/... : strings, once per step of every recipe
            folder = "".join(f"{part}/" for part in parts[1:]) if parts[0] == recipe else \
                f"{step.publish_dir.relative_to(recipe)}/"
            if step.kind.MAIN_OUTPUT in record["outputs"]:
                for name in (step.kind.MAIN_OUTPUT, f"{step.kind.MAIN_OUTPUT}.data"):
                    files.pop(folder + name, None)
            files |= {folder + name: obj for name, obj in record["outputs"].items()}
        mine = [r for r in mine.values() if r.status in DELIVERED]
        source = os.path.abspath(next(iter(shown.values())).recipe.file)  # no syscall: a no-op asks per recipe
        try:
            other = publish_recipe(cache, recipe, files, states, source)
        except OSError as exc:  # disk full, permissions: built and cached, but not delivered
            why = f"not published to {cache.out / recipe}: {exc.strerror or exc}"
            undelivered += _undeliver(mine, why)
            report(f"trtbuild: error: {why} ({recipe}: the results are in the cache; a build with space or "
                   "access again publishes them)")
            continue
        if other:
            report(f"trtbuild: warning: out/{recipe} was published from {other} and now from {source}: two "
                   f"recipes named {recipe!r} share out/{recipe} (and `trtbuild path {recipe}`); give one another name")
        for r in mine:  # an engine that made no plan is not an engine delivered
            if r.step.name == "engine" and r.step.kind.MAIN_OUTPUT not in r.outputs:
                undelivered += _undeliver([r], f"made no {r.step.kind.MAIN_OUTPUT}")
                report(f"trtbuild: error: {r.step.label} [{r.step.target.id}] made no {r.step.kind.MAIN_OUTPUT}")
    return undelivered


def _current(cache, step: Step, result, current: dict[str, tuple], lookup: Lookup) -> tuple[str | None, dict | None]:
    """(key, action record) of what `step` makes now: this run's result, else the cached result of its
    current key (a forced rerun that failed under the same key, a target this run did not build)."""
    if result is not None and result.status in DELIVERED:
        return result.key, result.record
    if step.skip_reason:
        return None, None
    upstream = {}
    for dep in step.deps:
        record = current.get(dep.id, (None, None))[1]
        if record is None:
            return None, None
        upstream[dep] = record
    key = result.key if result is not None else None
    try:
        key = key or step_key(key_components(step, cache, upstream))
    except (OSError, TrtbuildError):  # a source gone meanwhile: nothing of it is current
        return None, None
    return key, lookup(step, key)


def _undeliver(results: list, why: str) -> list:
    for r in results:
        r.outputs = {}
        r.error = why
    return results
