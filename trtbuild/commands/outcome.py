"""A run's outcome, decided once: the exit code and every failure in it. The JSON, JUnit and Markdown
reports, the recap on stderr and the exit code all read this one object, so they cannot disagree.

A failure is anything asked for and not delivered: a step that failed, an engine asked for with
--target / --backend that cannot be built here, a recipe error, an output built but not published
to out/ (a publish that failed, an engine that made no plan)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trtbuild.errors import EXIT_BUILD_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, first_line

STEP, UNBUILDABLE, RECIPE, UNPUBLISHED = "step", "unbuildable", "recipe", "unpublished"


@dataclass
class Failure:
    kind: str  # STEP, UNBUILDABLE, RECIPE or UNPUBLISHED
    label: str  # "resnet50/engine [tensorrt-10.13.0-sm86]", or the recipe file and line
    message: str  # one line: what went wrong
    detail: str = ""  # the whole error text (a traceback, the builder's log), when there is more
    result: object = None  # the step's StepResult; None for a recipe error

    def to_json(self) -> dict:
        data = {"kind": self.kind, "label": self.label, "message": self.message}
        if self.result is not None:
            r = self.result
            data |= {"recipe": r.step.recipe.recipe.name, "step": r.step.name,
                     "target": r.step.target.id if r.step.target else None}
        return data


@dataclass
class Outcome:
    results: list
    problems: list[str]  # recipe errors, one line each
    seconds: float
    exit_code: int
    failures: list[Failure] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def verdict(self) -> str:
        return {EXIT_OK: "ok", EXIT_INTERRUPTED: "INTERRUPTED"}.get(self.exit_code, "FAILED")

    def failure_of(self, result) -> Failure | None:
        """The failure a step's result is part of (None when it delivered what was asked)."""
        return next((f for f in self.failures if f.result is result), None)


def decide(results: list, problems: list[str], seconds: float, *, requested: str | None = None,
           unpublished: list | None = None, interrupted: bool = False, dry_run: bool = False) -> Outcome:
    """The outcome of a run. `requested`: the option that named the targets ("--target", "--backend"), so
    an engine skipped because this machine cannot build it is a failure, not a target for other
    machines. `unpublished`: results built or cached but not delivered to out/."""
    failures = [Failure(RECIPE, problem.split(": ")[0], problem) for problem in problems]
    unpublished_ids = {id(r) for r in unpublished or ()}
    for r in results:  # a label only for a failure: a no-op of a thousand recipes has none
        if r.status == "failed":
            failures.append(Failure(STEP, _label(r), headline(r.error or r.reason), r.error or "", r))
        elif id(r) in unpublished_ids:
            failures.append(Failure(UNPUBLISHED, _label(r), first_line(r.error or "not delivered to out/"),
                                    r.error or "", r))
        elif requested and r.step.name == "engine" and r.status == "skipped" and r.step.skip_reason:
            failures.append(Failure(UNBUILDABLE, _label(r),
                                    f"asked for with {requested} and cannot be built here: {r.reason}", "", r))
    if interrupted:
        code = EXIT_INTERRUPTED
    elif problems or any(f.result is not None and f.result.user_error for f in failures if f.kind == STEP):
        code = EXIT_USAGE
    else:
        code = EXIT_BUILD_FAILED if failures else EXIT_OK
    return Outcome(results, problems, seconds, code, failures, dry_run)


def _label(r) -> str:
    return r.step.label + (f" [{r.step.target.title}]" if r.step.target else "")


def headline(error: str) -> str:
    """An error's first line, with the next when the first only announces it ("could not parse:")."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}"
    return first_line(error)
