"""The end of a build: results on stdout (one line per recipe and target, then the totals), so
`trtbuild recipes/ > plans.txt` is useful as it is; a recap of what failed and what was slow on
stderr, after the per-step lines."""

from __future__ import annotations

import sys
from collections import Counter

from trtbuild.commands.outcome import headline

SLOW_BUILD_SECONDS = 60  # past this, the recap names the slowest steps


def print_results(outcome, stream=None) -> None:
    """`recipe<TAB>target<TAB>plan path`, or the engine's status and why, per engine step; then totals."""
    stream = stream or sys.stdout
    results = outcome.results
    by_step = {r.step: r for r in results}
    lines = []  # written at once: a build of a thousand recipes prints a thousand
    for r in results:
        if r.step.name != "engine":
            continue
        failure = outcome.failure_of(r)
        if failure is not None and failure.result.status == "skipped":  # asked for, and not buildable here
            outcome_text = f"failed: {failure.message}"
        elif "model.plan" in r.outputs:
            outcome_text = r.outputs["model.plan"]
        elif r.status == "skipped" and (failed := _failed_upstream(r.step, by_step)):  # name the step that failed
            outcome_text = f"skipped: {failed.step.name} failed: {headline(failed.error or failed.reason)}"
        else:
            outcome_text = f"{r.status}: {headline(r.error) if r.error else r.reason}"
        lines.append(f"{r.step.recipe.recipe.name}\t{r.step.target.id}\t{outcome_text}\n")
    stream.write("".join(lines))
    print(totals(outcome), file=stream, flush=True)


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


def totals(outcome) -> str:
    counts = Counter(r.status for r in outcome.results)
    parts = [f"{n} {status}" for status, n in counts.items()]
    if outcome.problems:
        parts.append(f"{len(outcome.problems)} recipe error(s)")
    undelivered = sum(f.result is not None and f.result.status != "failed" for f in outcome.failures)
    if undelivered:
        parts.append(f"{undelivered} not delivered")
    return f"{len(outcome.results)} steps: {', '.join(parts) or 'nothing to do'} in {outcome.seconds:.2f}s"


def recap(outcome, progress) -> None:
    """Every failure in one place (they scroll by among the step lines), targets left to other
    machines, and the slowest steps of a long build."""
    results, seconds = outcome.results, outcome.seconds
    if outcome.failures:
        progress.message(f"trtbuild: {len(outcome.failures)} failure(s), exit code {outcome.exit_code}:", "bold red")
        for f in outcome.failures:
            progress.message(f"  {f.label}: {f.message}" if f.result is not None else f"  {f.message}")
            for label, path in (("log", f.result and f.result.log), ("repro", f.result and f.result.repro)):
                if path:
                    progress.message(f"      {label}: {path}", "dim")
    elsewhere = sorted({(r.step.target.spec, r.step.skip_reason) for r in results
                        if r.step.name == "engine" and r.status == "skipped" and r.step.skip_reason
                        and outcome.failure_of(r) is None})
    if elsewhere:  # a recipe's targets for other GPU hosts: not a failure here, but never silent
        progress.message(f"trtbuild: {len(elsewhere)} target(s) left to other machines: "
                         + "; ".join(f"{spec}: {why}" for spec, why in elsewhere))
    ran = sorted((r for r in results if r.seconds), key=lambda r: -r.seconds)[:5]
    if seconds > SLOW_BUILD_SECONDS and ran:
        progress.message("trtbuild: slowest steps: " + ", ".join(
            f"{r.step.label}{f' [{r.step.target.id}]' if r.step.target else ''} {r.seconds:.1f}s" for r in ran))
