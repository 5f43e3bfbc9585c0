"""Building one stale step: take its lock, look again (another recipe or run may have built it, the
remote may have it), hand its job to the executor, and commit what it made. Runs on a build thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from trtbuild.execution import weights_only
from trtbuild.execution.ahead import Ahead
from trtbuild.execution.disk import Disk
from trtbuild.execution.executor import Executor, Task
from trtbuild.execution.jobs import needs_own_process, upstream_objects
from trtbuild.execution.publishing import Publisher
from trtbuild.execution.results import BUILT, FAILED, INTERRUPTED, WOULD_RUN, StepResult
from trtbuild.execution.staleness import Staleness
from trtbuild.planning.graph import Step


class StepBuild:
    def __init__(self, disk: Disk, executor: Executor, staleness: Staleness, publisher: Publisher, progress,
                 stopping: threading.Event, coming: Callable[[], set], step_timeout: float | None = None,
                 jobs: int = 1):
        self.disk, self.executor, self.staleness, self.publisher = disk, executor, staleness, publisher
        self.progress = progress
        self.stopping = stopping  # set when the run is interrupted
        self.coming = coming  # the steps not finished yet
        self.step_timeout = step_timeout  # seconds; beats each recipe's step_timeout
        self.checks_sources = getattr(executor, "checks_sources", False)  # a farm: its nodes digest user files
        self._seen: set[str] = set()  # keys this run's own threads have locked (built, or found built)
        self._ahead: dict[Step, tuple[Ahead, Task | None]] = {}  # steps building ahead of their gates
        self._ahead_lock = threading.Lock()
        self._modules: dict[Step, tuple[str, ...]] = {}  # what each step imports (_imports), asked once
        # -j jobs on the executor at a time; a build thread committing what its step made (hashing, fsync)
        # holds none, so the next step's job starts meanwhile (the scheduler has more threads than -j).
        self._slots = threading.Semaphore(max(1, jobs))

    def build(self, step: Step, key: str, components: dict, deps: dict[Step, StepResult],
              ahead: Ahead | None = None) -> StepResult:
        """The step's result; an exception of trtbuild's own fails this step alone. `ahead`: the step started
        before gates it waits on ended (trtbuild.execution.ahead): nothing is recorded until they pass."""
        if ahead is not None:
            with self._ahead_lock:
                self._ahead[step] = (ahead, None)
        try:
            result = self._build(step, key, components, deps, ahead)
        except Exception as exc:
            result = self.crashed(step, exc)
        finally:
            with self._ahead_lock:
                self._ahead.pop(step, None)
        return (ahead and ahead.verdict()) or result

    def cancel(self, step: Step) -> None:
        """A gate of `step`, which builds ahead of it, did not pass: its job does not start, or is killed."""
        with self._ahead_lock:
            ahead, task = self._ahead.get(step, (None, None))
            if ahead is None:
                return
            ahead.cancelled.set()
        if task is not None and hasattr(self.executor, "cancel"):
            self.executor.cancel(task)

    def crashed(self, step: Step, exc: Exception) -> StepResult:
        """The result of a step whose build raised: interrupted when the run is stopping (its worker was
        killed, the pool closed under it), else a failure of that step alone; the run goes on."""
        if self.stopping.is_set():
            return StepResult(step, INTERRUPTED, "the run was interrupted while it ran")
        if isinstance(exc, OSError):  # disk full, permissions
            return StepResult(step, FAILED, "cache I/O error", error=f"{type(exc).__name__}: {exc}")
        import traceback

        traceback.print_exc()  # a bug of trtbuild's: the report and the other steps go on
        return StepResult(step, FAILED, "internal error", error=f"{type(exc).__name__}: {exc}")

    def _build(self, step: Step, key: str, components: dict, deps: dict[Step, StepResult],
               ahead: Ahead | None = None) -> StepResult:
        state = self.disk.state(step.recipe.recipe.name)
        forced = self.staleness.forced(step)
        reason = self.staleness.why(step, components, state)
        # only weights moved: the export reuses its last graph (not on a farm, whose nodes lack its files)
        reuse = None if forced or self.checks_sources else self.disk.reuse(step, components, state)
        if reuse:
            reason = weights_only.reason(reuse)
        if self.staleness.dry_run:
            return StepResult(step, WOULD_RUN, reason, key=key)
        lock = self.disk.step_lock(key)
        if not self._lock(step, key, lock):
            return StepResult(step, INTERRUPTED, "interrupted while waiting for another run")
        ours = key in self._seen
        self._seen.add(key)
        try:
            # Another recipe of this run, or another run, may have built it while we waited for the lock.
            cached = None if forced else self.staleness.cached(
                step, key, "built by another recipe of this run" if ours else "built by a concurrent run")
            if cached:
                return cached
            if not forced and self.disk.pull(key):
                pulled = self.staleness.cached(step, key, "pulled from the remote cache")
                if pulled and ahead and ahead.verdict():  # its state says built only once the gates passed
                    return ahead.verdict()
                if pulled:  # else what it read while it ran differs here: build it
                    self.publisher.state(step, key, components, "built")
                    return pulled
                reason = self.staleness.moved(step, reason)
            result = self._execute(step, key, components, reason, deps, reuse, ahead)
            if result.status == BUILT:  # pushed where the remote lacks it; --force replaces it
                self.disk.share(key, result.record, replace=forced)
            return result
        finally:
            lock.release()

    def _lock(self, step: Step, key: str, lock) -> bool:
        """Take the step's lock, waiting while another recipe of this run or another run builds it; False
        when the run was interrupted meanwhile."""
        from filelock import Timeout  # here: a no-op build takes no step lock

        try:
            lock.acquire(blocking=False)
            return True
        except Timeout:
            self.progress.waiting(step, "another recipe of this run is building it" if key in self._seen else
                                  "another trtbuild run is building it")
        while True:  # in slices, so an interrupted run stops waiting for another run's step
            try:
                lock.acquire(timeout=0.5)
                return True
            except Timeout:
                if self.stopping.is_set():
                    return False

    def _execute(self, step: Step, key: str, components: dict, reason: str, deps: dict[Step, StepResult],
                 reuse: dict | None = None, ahead: Ahead | None = None) -> StepResult:
        if not self._slot():  # interrupted while it waited (on the remote, for a job slot): start nothing
            return StepResult(step, INTERRUPTED, "the run was interrupted before it started", key=key)
        slot, workdir = True, None
        try:
            if ahead and ahead.cancelled.is_set():  # a gate failed before it started: its verdict says so
                return ahead.verdict()
            self.progress.started(step, f"{reason}; ahead of {ahead.names}" if ahead else reason)
            workdir, log = self.disk.scratch(step, key)
            started = time.perf_counter()
            job = self.disk.job(step, {d: r.record for d, r in deps.items()}, workdir, components,
                                self.checks_sources, reuse)
            task = Task(job, log, isolated=needs_own_process(step), spare=self._spare_imports(step),
                        imports=_imports(step),
                        timeout=self.step_timeout or step.recipe.recipe.step_timeout, label=step.label,
                        objects=upstream_objects(step, components), target=step.target,
                        precision=step.params.get("precision", "fp32"), cancelled=ahead and ahead.cancelled)
            if ahead:
                with self._ahead_lock:
                    self._ahead[step] = (ahead, task)
            result = self.executor.run(task)
            seconds = time.perf_counter() - started
            self._slots.release()
            slot = False
            if ahead and ahead.verdict():  # a gate did not pass: nothing of what it made is kept
                return ahead.verdict()
            node = result.get("node")
            if self.stopping.is_set():  # its worker was killed by the interruption: not a failure of the step
                return StepResult(step, INTERRUPTED, "the run was interrupted while it ran", seconds, key=key,
                                  log=str(log), node=node)
            if result["ok"] and (moved := self.disk.sources_moved(step, components)):
                result = {"ok": False, "user_error": False, "error": moved}
            if not result["ok"]:
                return self._failed(step, key, components, reason, result, seconds, job, log, workdir, node)
            reason = weights_only.outcome(reason, result["meta"])
            outputs = self.disk.outputs(workdir, result.get("written") or {})
            record = self.publisher.commit(step, key, components, outputs, result["meta"], seconds, node)
            return StepResult(step, BUILT, reason, seconds, self.publisher.paths(step, outputs), key, record,
                              log=str(log), node=node)
        finally:
            if slot:
                self._slots.release()
            if workdir is not None:
                self.disk.discard(workdir)

    def _slot(self) -> bool:
        """Wait for one of the -j job slots; False when the run is interrupted meanwhile."""
        while not self._slots.acquire(timeout=0.2):
            if self.stopping.is_set():
                return False
        if self.stopping.is_set():
            self._slots.release()
            return False
        return True

    def _failed(self, step: Step, key: str, components: dict, reason: str, result: dict, seconds: float,
                job: dict, log, workdir, node: dict | None) -> StepResult:
        self.disk.log_error(log, result["error"])
        self.publisher.state(step, key, components, "failed")
        return StepResult(step, FAILED, reason, seconds, key=key, meta=result.get("meta") or {},
                          error=result["error"], user_error=result.get("user_error", False), log=str(log),
                          repro=self._repro(job, step, key, workdir), node=node)

    def _repro(self, job: dict, step: Step, key: str, workdir) -> str | None:
        """A script reproducing the failed step (trtbuild.execution.repro); a failure to write
        one is only a warning: the step's own error is what matters."""
        try:
            return self.disk.repro(job, step, key, workdir)
        except Exception as exc:
            self.progress.warn(f"no repro script for {step.label}: {type(exc).__name__}: {exc}")
            return None

    def _spare_imports(self, running: Step) -> tuple[str, ...] | None:
        """What a spare worker should import while `running` runs: the libraries of the steps still to
        come (eight engines need no ONNX Runtime); None when no step follows. A step like this one (another
        recipe's check of the same model) will find its output in the cache: counted only if all are."""
        found, alike, others = set(), set(), False
        for step in list(self.coming()):
            if step is running:
                continue
            others = True
            modules = self._modules.get(step)
            if modules is None:
                modules = self._modules[step] = _imports(step)
            if not modules or found.issuperset(modules):
                continue
            if step.kind is running.kind and step.params == running.params and step.inputs == running.inputs:
                alike.update(modules)
            else:
                found.update(modules)
        return tuple(sorted(found or alike)) if others else None


def _imports(step: Step) -> tuple[str, ...]:
    """The heavy modules `step`'s run() imports: its kind's imports(params), or IMPORTS."""
    imports = getattr(step.kind, "imports", None)
    return imports(step.params) if imports else getattr(step.kind, "IMPORTS", ())
