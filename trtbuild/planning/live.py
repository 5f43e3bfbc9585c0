"""What the recipes in use make now: the keys `trtbuild gc DIR...` keeps (every target of every recipe)."""

from __future__ import annotations

from trtbuild.planning.graph import Step
from trtbuild.planning.keys import key_components, step_key


def live_steps(steps: list[Step], cache) -> tuple[set[str], set[tuple[str, str]]]:
    """(keys, pinned). keys: those of the steps whose inputs the cache holds, found as a build would find
    them. pinned: (recipe, step id) of the steps whose key cannot be taken here (a target this machine
    cannot build, an input not built yet): gc keeps their newest result rather than guess."""
    keys: set[str] = set()
    pinned: set[tuple[str, str]] = set()
    records: dict[Step, dict] = {}
    for step in _ordered(steps):
        if step.skip_reason or any(dep not in records for dep in step.deps):
            pinned.add((step.recipe.recipe.name, step.id))
            continue
        try:
            key = step_key(key_components(step, cache, {dep: records[dep] for dep in step.deps}))
        except (OSError, KeyError, ValueError):
            pinned.add((step.recipe.recipe.name, step.id))
            continue
        keys.add(key)
        record = cache.read_action(key)
        if record is not None:
            records[step] = record
    return keys, pinned


def _ordered(steps: list[Step]) -> list[Step]:
    """Dependencies first."""
    done: list[Step] = []
    seen: set[Step] = set()

    def visit(step: Step) -> None:
        if step in seen:
            return
        seen.add(step)
        for dep in step.deps:
            visit(dep)
        done.append(step)

    for step in steps:
        visit(step)
    return done
