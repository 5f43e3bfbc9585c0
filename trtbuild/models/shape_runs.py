"""The exported model at every shape the recipe promises, before an engine is built for them.

ONNX Runtime runs the model at min, opt and max of every optimization profile; where the framework's
outputs are wanted (parity on), the framework runs there too and the two are compared. An exporter
traces at one size: a dim it fixed (torch specialises a dynamic dim whose example size is 1; a branch
such as `x.shape[1] == 1` keeps the path taken at that size) yields a model that fails, or computes
something else, at the profile's other sizes. That is the recipe's promise broken, so a recipe error
naming the input, the dim, the likely cause and the fix, never an engine.

Runs in the export step's worker; imports numpy and onnxruntime.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np

from trtbuild.errors import StepError
from trtbuild.models.tensors import compare, example_inputs, onnxruntime_problem

# fp32 against fp32: float noise stays far below this; a model that took another path does not
FAR_APART = 1e-3

_SOURCE = re.compile(r"\S+\.(?:h|cc|cpp):\d+ \S+\(.*?\) ")  # ONNX Runtime's source line and C++ signature
Predict = Callable[[dict[str, np.ndarray]], object]  # the framework's outputs (dict by name or list)


def points(ranges: list[dict]) -> list[tuple[str, dict, dict[str, list[int]]]]:
    """(label, profile, shapes) for each distinct min / opt / max of the profiles, each profile's opt first."""
    found, seen = [], set()
    for profile in ranges:
        for at in ("opt", "min", "max"):
            shapes = {name: r[at] for name, r in profile["inputs"].items()}
            key = json.dumps(shapes, sort_keys=True)
            if key not in seen:
                seen.add(key)
                found.append((at if len(ranges) == 1 else f"profile {profile['name']!r} {at}", profile, shapes))
    return found


def check(model: Path, inputs: dict[str, dict], ranges: list[dict], seed: int, values_from: Path | None,
          where: Callable[[str], str], predict: Predict | None = None, traced_at_opt: bool = True) -> list[str]:
    """Run the model (and compare it with `predict`) at every point of `ranges`; a StepError (a recipe
    error) at the first shape it cannot serve. `inputs`: every model input as {dtype, shape, opt}.
    Returns the labels of the points it ran at."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception:
        return []  # not a model ONNX Runtime loads: the check and parity steps say why
    names = [o.name for o in session.get_outputs()]
    taken = {i.name for i in session.get_inputs()}

    def feeds(shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
        at = {n: s | {"opt": shapes.get(n, s["opt"])} for n, s in inputs.items() if n in taken}
        return example_inputs(at, seed, values_from=values_from)

    def problem(shapes: dict[str, list[int]]) -> str | None:
        """What goes wrong at `shapes`, or None."""
        given = feeds(shapes)
        try:
            actual = session.run(names, given)
        except Exception as exc:
            return f"fails in ONNX Runtime ({_SOURCE.sub('', onnxruntime_problem(exc))[:240]})"
        if predict is None:
            return None
        try:
            expected = predict(given)
            rows = compare(names, expected, actual, atol=FAR_APART, rtol=FAR_APART, rel_l2_passes=FAR_APART)
        except Exception:
            return None  # the framework does not run there (or names its outputs otherwise): nothing to compare
        bad = [r for r in rows if not r["ok"]]
        if not bad:
            return None
        r = bad[0]
        differs = r.get("error") or f"relative L2 error {r['rel_l2']:.2g}"
        return f"computes other outputs than the model (output {r['output']!r}: {differs})"

    found_points = points(ranges)
    traced_label, _, traced = found_points[0]  # the first profile's opt: where the export ran the model
    if problem(traced) is not None:
        return []  # wrong there as well: not a matter of shapes; parity and verify say what
    for label, _, shapes in found_points[1:]:
        found = problem(shapes)
        if found is not None:
            raise StepError(_blame(label, shapes, traced_label, traced, found, problem, where,
                                   traced_at_opt, [p for _, _, p in found_points]), user_error=True)
    return [label for label, _, _ in found_points]


def coupled(moved: list[tuple[str, int]], every: list[dict]) -> list[list[tuple[str, int]]]:
    """The moved dims in groups that move together: those of the same size at every shape the recipe
    promises (`every`: each point's shapes), such as a batch that every input shares or the past length of
    a KV cache's keys and values. Moving one of them alone makes shapes no model takes (a batch of 4 tokens
    over a cache of 2), whatever the export did."""
    groups: dict[tuple[int, ...], list[tuple[str, int]]] = {}
    for name, dim in moved:
        groups.setdefault(tuple(p[name][dim] if name in p else None for p in every), []).append((name, dim))
    return list(groups.values())


def _blame(label: str, shapes: dict, base_label: str, base: dict, found: str, problem, where, traced_here: bool,
           every: list[dict]) -> str:
    """One line: the input and dim whose move alone (with the dims coupled to it; the others as traced)
    brings the failure, why, and the fix."""
    moved = [(n, d) for n, shape in shapes.items() for d, v in enumerate(shape) if v != base[n][d]]

    def fails(group: list[tuple[str, int]]) -> bool:
        alone = {n: list(s) for n, s in base.items()}
        for name, dim in group:
            alone[name][dim] = shapes[name][dim]
        return problem(alone) is not None

    culprit = None
    for group in coupled(moved, every):
        if fails(group):
            # sizes equal by chance (a batch of 4 beside a width of 4) are told apart where one alone fails
            lone = [member for member in group if fails([member])] if len(group) > 1 else group
            culprit = lone[0] if len(lone) == 1 else group[0]
            break
    name, dim = culprit or moved[0]
    fixed = base[name][dim]
    dims = f"dim {dim}" if culprit or len(moved) == 1 else "dims " + ", ".join(f"{n}[{d}]" for n, d in moved)
    head = (f"{where(f'inputs.{name}')}: inputs.{name}: at {label} {shapes[name]} (it runs at {base_label} "
            f"{base[name]}) the exported model {found}: ")
    if fixed == 1 and traced_here:
        at = "opt" if base_label == "opt" else "the first profile's opt"
        return head + (f"the export fixed {dims} at 1, its size at {at} (torch fixes a dynamic dim whose example "
                       "size is 1, and code that branches on the size, such as `x.shape[1] == 1`, keeps the path "
                       f"taken there): make {at} of dim {dim} 2 or more (the export traces at opt)")
    return head + (f"the model's code or the exporter fixed {dims} at {fixed} (a branch on its size, or a size "
                   f"taken as a Python value): make dim {dim} {fixed} in min, opt and max, or change the model so "
                   "that it takes any size there")
