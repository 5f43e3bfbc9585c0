"""What a step of a run ended in: its status, why, and what it made (the reports and out/ read these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trtbuild.planning.graph import Step

# Statuses a step can end in. "would-run" and "would-pull" (from the remote cache) only appear with --dry-run.
BUILT, CACHED, FAILED, SKIPPED = "built", "cached", "failed", "skipped"
INTERRUPTED = "interrupted"  # the run was stopped (Ctrl-C, SIGTERM) before the step finished; nothing recorded
WOULD_RUN, WOULD_PULL = "would-run", "would-pull"


@dataclass
class StepResult:
    step: Step
    status: str
    reason: str
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    key: str | None = None
    record: dict | None = None  # the action record, for downstream keys
    meta: dict = field(default_factory=dict)  # what the step reported (also on failure)
    error: str | None = None
    user_error: bool = False
    log: str | None = None
    repro: str | None = None  # a script that runs the failed step again on the same job (execution.repro)
    node: dict | None = None  # where a cluster executor ran it: {"id", "address"}

    def to_json(self) -> dict:
        data = {
            "recipe": self.step.recipe.recipe.name,
            "recipe_file": str(self.step.recipe.file),
            "step": self.step.name,
            "target": self.step.target.id if self.step.target else None,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "outputs": self.outputs,
            "key": self.key,
        }
        if self.meta or self.record:
            data["meta"] = self.meta or self.record.get("meta", {})
        if self.error:
            data["error"] = self.error
        if self.log:
            data["log"] = self.log
        if self.repro:
            data["repro"] = self.repro
        if self.node:
            data["node"] = self.node
        return data

