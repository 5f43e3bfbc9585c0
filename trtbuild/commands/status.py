"""Fresh / remote / stale / missing / failed / skipped per step, and the recipe x target matrix built from it."""

from __future__ import annotations

from trtbuild.store.cache import Cache

# The worse state wins when a cell summarizes a chain of steps.
_SEVERITY = {"fresh": 0, "remote": 1, "skipped": 2, "missing": 3, "stale": 4, "failed": 5}


def step_states(results, cache: Cache) -> list[dict]:
    """One row per step from a dry run's results."""
    rows = []
    states = {name: cache.read_state(name) for name in {r.step.recipe.recipe.name for r in results}}
    for r in results:
        previous = states[r.step.recipe.recipe.name].get(r.step.id)
        if r.step.skip_reason:
            state = "skipped"
        elif r.status == "cached":
            state = "fresh"
        elif r.status == "would-pull":
            state = "remote"  # a build pulls it instead of building
        elif previous is None:
            state = "missing"
        elif previous.get("status") == "failed" and r.reason == "last attempt failed":
            state = "failed"
        else:
            state = "stale"
        rows.append({"recipe": r.step.recipe.recipe.name, "step": r.step.name,
                     "target": r.step.target.id if r.step.target else None,
                     "target_spec": r.step.target.spec if r.step.target else None,
                     "target_title": r.step.target.title if r.step.target else None,
                     "state": state, "reason": "" if state == "fresh" else r.reason})
    return rows


def matrix(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """recipe -> target id -> {state, reason}: the engine's state, or the worst state on its way there."""
    cells: dict[str, dict[str, dict]] = {}
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == recipe]
        upstream = [r for r in mine if r["target"] is None]
        cells[recipe] = {}
        for engine in (r for r in mine if r["step"] == "engine"):
            chain = [engine] if engine["state"] == "skipped" else upstream + [engine]
            worst = max(reversed(chain), key=lambda r: _SEVERITY[r["state"]])  # ties go to the engine
            reason = worst["reason"] if worst is engine else f"{worst['step']}: {worst['reason']}"
            cells[recipe][engine["target"]] = {"state": worst["state"], "reason": reason}
    return cells


def render_matrix(cells: dict[str, dict[str, dict]], titles: dict[str, str] | None = None) -> str:
    """The matrix as a table; `titles`: target id -> its column heading (Target.title)."""
    targets = list(dict.fromkeys(t for row in cells.values() for t in row))
    heads = [(titles or {}).get(t, t) for t in targets]
    width = max([len("recipe")] + [len(r) for r in cells]) + 2
    columns = [max(len(h), 8) + 2 for h in heads]
    lines = ["recipe".ljust(width) + "".join(h.ljust(c) for h, c in zip(heads, columns))]
    for recipe, row in cells.items():
        lines.append(recipe.ljust(width) + "".join(row.get(t, {"state": "-"})["state"].ljust(c)
                                                   for t, c in zip(targets, columns)))
    notes = [f"  {recipe} [{(titles or {}).get(t, t)}]: {cell['state']}: {cell['reason']}"
             for recipe, row in cells.items() for t, cell in row.items() if cell["state"] != "fresh"]
    return "\n".join([line.rstrip() for line in lines] + ([""] + notes if notes else []))
