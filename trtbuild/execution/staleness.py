"""Which steps are stale: a step's key, its cached result if that result still holds, and why it must
run when it does not. Everything read goes through a Disk (trtbuild.execution.disk)."""

from __future__ import annotations

from trtbuild.execution.disk import Disk
from trtbuild.execution.publishing import Publisher
from trtbuild.execution.reasons import why_run
from trtbuild.execution.results import CACHED, WOULD_PULL, StepResult
from trtbuild.planning.graph import Step


class Staleness:
    def __init__(self, disk: Disk, publisher: Publisher, warn, dry_run: bool = False, force: str | None = None):
        self.disk, self.publisher, self.warn = disk, publisher, warn
        self.dry_run = dry_run
        self.force = force  # "all" or a step kind: run those steps even when cached
        self._moved: dict[Step, str] = {}  # steps whose hit is void: files their last run read have changed

    def forced(self, step: Step) -> bool:
        return self.force in ("all", step.name)

    def settle(self, step: Step, deps: dict[Step, StepResult]) -> StepResult | tuple[str, dict]:
        """The result of a step whose dependencies are done, when no build is needed (a cache hit; with
        --dry-run and a remote, a hit there); else its (key, key components)."""
        key, components = self.disk.key(step, {d: r.record for d, r in deps.items() if r.record})
        cached = None if self.forced(step) else self.cached(step, key, "up to date")
        if cached and not self.dry_run:
            self.publisher.current(step, key, components)
            self.disk.share(key, cached.record)
        if cached is None and self.dry_run:
            record = self.disk.remote_record(key)
            if record:
                return StepResult(step, WOULD_PULL, "on the remote cache", key=key, record=record)
        return cached or (key, components)

    def stale(self, step: Step, deps: dict[Step, StepResult]) -> tuple[str, dict] | None:
        """The step's (key, key components) when it must build: no result in the cache holds (nor --dry-run,
        which builds nothing). Unlike settle, records nothing: for a step that may start before gates it
        waits on have passed, whose cache hit must wait for them (trtbuild.execution.ahead)."""
        if self.dry_run:
            return None
        key, components = self.disk.key(step, {d: r.record for d, r in deps.items() if r.record})
        if self.forced(step) or self.disk.action(step, key) is None:
            return key, components
        return None  # a record: settle checks it once the gates passed (and builds if it does not hold)

    def cached(self, step: Step, key: str, reason: str) -> StepResult | None:
        """The step's result under `key` when the cache has one that still holds: a hit is a claim,
        and the files its code read while it ran (not in its key) are checked too."""
        record = self.disk.action(step, key)
        if record is None:
            return None
        try:
            moved = self.disk.moved_reads(step, record)
        except ValueError as exc:
            self.warn(f"{step.label}: ignoring the cached result {key[:12]}: {exc}")
            return None
        if moved:  # the key holds; what the step's code read while it ran does not
            self._moved[step] = f"{', '.join(moved[:3])}{' ...' if len(moved) > 3 else ''} (read while it ran)"
            return None
        if self.dry_run:
            outputs = {}
        else:
            outputs = self.publisher.paths(step, record["outputs"])
            self.disk.note_used(key)
        return StepResult(step, CACHED, reason, outputs=outputs, key=key, record=record)

    def why(self, step: Step, components: dict, state: dict) -> str:
        """Why a step with no valid cached result runs."""
        if self.forced(step):
            return "--force"
        return self.moved(step) or why_run(step, state, components)

    def moved(self, step: Step, otherwise: str | None = None) -> str | None:
        """Why the step's last hit was void (files it read moved), once; else `otherwise`."""
        return self._moved.pop(step, otherwise)

    def record_of(self, step: Step, key: str) -> dict | None:
        """The verified action record of `step` under `key`, or None: what out/ shows."""
        cached = self.cached(step, key, "up to date")
        return cached.record if cached else None
