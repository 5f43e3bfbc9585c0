"""The end of a build: results on stdout (one line per recipe and target, then the totals), so
`trtbuild recipes/ > plans.txt` is useful as it is; a recap of what failed and what was slow on
stderr, after the per-step lines."""

from __future__ import annotations

import sys
from collections import Counter

from trtbuild.errors import first_line

SLOW_BUILD_SECONDS = 60  # past this, the recap names the slowest steps


def print_results(results, problems: list[str], seconds: float, stream=None) -> None:
    """`recipe<TAB>target<TAB>plan path`, or the engine's status and why, per engine step; then totals."""
    stream = stream or sys.stdout
    by_step = {r.step: r for r in results}
    for r in results:
        if r.step.name != "engine":
            continue
        failed = _failed_upstream(r.step, by_step)
        if "model.plan" in r.outputs:
            outcome = r.outputs["model.plan"]
        elif failed and r.status == "skipped":  # name the step that failed, not the one between
            outcome = f"skipped: {failed.step.name} failed: {headline(failed.error or failed.reason)}"
        else:
            outcome = f"{r.status}: {headline(r.error) if r.error else r.reason}"
        print(f"{r.step.recipe.recipe.name}\t{r.step.target.id}\t{outcome}", file=stream)
    print(totals(results, problems, seconds), file=stream, flush=True)


def _failed_upstream(step, by_step: dict):
    """The first failed step this one depends on, however far up; None when none failed."""
    seen, todo = set(), list(step.deps)
    while todo:
        dep = todo.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        result = by_step.get(dep)
        if result is not None and result.status == "failed":
            return result
        todo += dep.deps
    return None


def headline(error: str) -> str:
    """An error's first line, with the next when the first only announces it ("could not parse:")."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}"
    return first_line(error)


def totals(results, problems: list[str], seconds: float) -> str:
    counts = Counter(r.status for r in results)
    parts = [f"{n} {status}" for status, n in counts.items()]
    if problems:
        parts.append(f"{len(problems)} recipe error(s)")
    return f"{len(results)} steps: {', '.join(parts) or 'nothing to do'} in {seconds:.2f}s"


def recap(results, problems: list[str], seconds: float, progress) -> None:
    """Every failure in one place (they scroll by among the step lines), targets left to other
    machines, and the slowest steps of a long build."""
    failed = [r for r in results if r.status == "failed"]
    if failed or problems:
        progress.message(f"trtbuild: {len(failed)} step(s) failed" + (f", {len(problems)} recipe error(s)" if problems
                                                                       else "") + ":", "bold red")
        for problem in problems:
            progress.message(f"  {problem}")
        for r in failed:
            target = f" [{r.step.target.id}]" if r.step.target else ""
            progress.message(f"  {r.step.label}{target}: {headline(r.error or r.reason)}")
            for label, path in (("log", r.log), ("repro", r.repro)):
                if path:
                    progress.message(f"      {label}: {path}", "dim")
    elsewhere = sorted({(r.step.target.spec, r.step.skip_reason) for r in results
                        if r.step.name == "engine" and r.status == "skipped" and r.step.skip_reason})
    if elsewhere:  # a recipe's targets for other GPU hosts: not a failure here, but never silent
        progress.message(f"trtbuild: {len(elsewhere)} target(s) left to other machines: "
                         + "; ".join(f"{spec}: {why}" for spec, why in elsewhere))
    ran = sorted((r for r in results if r.seconds), key=lambda r: -r.seconds)[:5]
    if seconds > SLOW_BUILD_SECONDS and ran:
        progress.message("trtbuild: slowest steps: " + ", ".join(
            f"{r.step.label}{f' [{r.step.target.id}]' if r.step.target else ''} {r.seconds:.1f}s" for r in ran))
