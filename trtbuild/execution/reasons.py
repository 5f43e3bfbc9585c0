"""Why a step must run, as the progress lines and reports say it."""

from __future__ import annotations

from trtbuild.planning.graph import Step
from trtbuild.planning.keys import explain


def why_run(step: Step, state: dict, components: dict) -> str:
    """Why `step` runs, from its last build. A target never built before says so; what else changed since
    the step's latest build for another target follows (its own target's parameters differ by nature)."""
    if step.id in state or step.target is None:
        return explain(state.get(step.id), components, step)
    others = [(e["time"], sid.split("@", 1)[-1], e) for sid, e in state.items()
              if sid.split("@")[0] == step.name and isinstance(e, dict) and "time" in e
              and _backend_of(e) in (None, step.target.backend)]
    if not others:
        return "never built"
    _, other, previous = max(others, key=lambda o: o[0])
    changes = [c for c in explain(previous, components, step).split("; ")  # a new target's own parameters
               if not c.startswith(("params.target.compute_capabilities", "params.target.gpu_model"))
               and c != "last attempt failed" and not c.startswith("cached result missing")]
    return "never built for this target" + (f"; since the {other} build: {'; '.join(changes)}" if changes else "")


def _backend_of(entry: dict) -> str | None:
    """The backend a state entry's engine was built with (its key components), None when it does not say."""
    target = ((entry.get("components") or {}).get("params") or {}).get("target")
    return target.get("backend") if isinstance(target, dict) else None
