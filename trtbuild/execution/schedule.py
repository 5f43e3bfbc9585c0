"""The order of a run: each step starts once its dependencies are done, up to -j at a time; a step after
one that failed or was skipped is skipped, its siblings go on; a stop (Ctrl-C, SIGTERM) ends the run and
says what each step got to. Pure logic over the steps: settling a step (a cache lookup) and building it
are handed in (trtbuild.execution.staleness, step_build)."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable

from trtbuild.execution.results import FAILED, INTERRUPTED, SKIPPED, WOULD_RUN, StepResult
from trtbuild.execution.threads import BuildThreads
from trtbuild.planning.graph import Step

Settle = Callable[[Step, dict], "StepResult | tuple[str, dict]"]  # (step, deps' results) -> its result or (key, components)
Build = Callable[[Step, str, dict, dict], StepResult]  # (step, key, components, deps' results) -> its result


def from_dependencies(step: Step, deps: dict[Step, StepResult]) -> StepResult | None:
    """The step's result when its own skip reason or its dependencies' results decide it, else None."""
    if step.skip_reason:
        return StepResult(step, SKIPPED, step.skip_reason)
    blocked = [d for d in deps.values() if d.status in (FAILED, SKIPPED)]
    if blocked:
        return StepResult(step, SKIPPED, f"{blocked[0].step.name} did not complete")
    waiting = [d for d in deps.values() if d.status == WOULD_RUN]
    if waiting:
        # The root cause, not the chain: "inputs.code.(main) changed (export reruns first)".
        upstream = waiting[0]
        cause = upstream.reason if upstream.reason.endswith("reruns first)") else \
            f"{upstream.reason} ({upstream.step.name} reruns first)"
        return StepResult(step, WOULD_RUN, cause)
    return None


class Scheduler:
    def __init__(self, settle: Settle, build: Build, progress, jobs: int = 1, stop: Callable[[], None] = lambda: None,
                 stopping: threading.Event | None = None):
        self.settle, self.build, self.progress = settle, build, progress
        self.jobs = max(1, jobs)
        self.stop = stop  # kills what runs (the executor's workers), ends waits on the remote
        self.stopping = stopping or threading.Event()  # set first when the run stops; builds look at it
        self.unfinished: set[Step] = set()  # steps to come that may build: worth a warm spare worker?
        self.interrupted = False

    def run(self, steps: list[Step], results: dict[Step, StepResult]) -> None:
        """Run every step once its dependencies are done, filling `results` as steps finish (what an
        interrupted run reports). Ctrl-C or SIGTERM (KeyboardInterrupt): the run stops, every step not
        finished is interrupted, and `interrupted` is set; any other exception stops it and propagates."""
        self._finished: queue.Queue = queue.Queue()  # (step, its build's concurrent.futures.Future), from build threads
        self._here: collections.deque = collections.deque()  # (step, result) settled on this thread
        self.unfinished = {s for s in steps if not s.skip_reason}
        # Build threads block SIGINT / SIGTERM, and so do the workers they start (a blocked signal stays
        # blocked across exec): Ctrl-C reaches the whole process group, and a worker dying of it would
        # look like a failed step. The main thread handles the signal and kills the workers itself.
        with BuildThreads(self.jobs) as threads:
            try:
                self._loop(steps, results, threads)
            except BaseException as exc:
                self._halt(threads)
                if not isinstance(exc, KeyboardInterrupt):
                    raise
                self._interrupted(steps, results)

    def _loop(self, steps: list[Step], results: dict[Step, StepResult], threads: BuildThreads) -> None:
        blockers = {s: len(s.deps) for s in steps}
        dependents: dict[Step, list[Step]] = {s: [] for s in steps}
        for step in steps:
            for dep in step.deps:
                dependents[dep].append(step)
        for step in steps:
            if not blockers[step]:
                self._start(step, results, threads)
        while len(results) < len(steps):
            step, result = self._next()
            results[step] = result
            self.unfinished.discard(step)
            for after in dependents[step]:
                blockers[after] -= 1
                if not blockers[after]:
                    self._start(after, results, threads)

    def _next(self) -> tuple[Step, StepResult]:
        """The next step to finish: one settled on this thread first, else the next build to end."""
        if self._here:
            return self._here.popleft()
        step, future = self._finished.get()
        return step, future.result()

    def _start(self, step: Step, results: dict[Step, StepResult], threads: BuildThreads) -> None:
        deps = {d: results[d] for d in step.deps}
        # Most steps of a rebuild are settled by a lookup: do those here, without a thread hop.
        settled = from_dependencies(step, deps) or self.settle(step, deps)
        if isinstance(settled, StepResult):
            self.progress.finished(settled)
            self._here.append((step, settled))  # no queue, no lock: taken before waiting on a thread
            return

        def build() -> StepResult:
            result = self.build(step, *settled, deps)
            self.progress.finished(result)
            return result

        threads.submit(build).add_done_callback(lambda f: self._finished.put((step, f)))

    def _halt(self, threads: BuildThreads) -> None:
        """Stop: steps still waiting start nothing, running ones end at once (their workers are killed)."""
        self.stopping.set()
        self.stop()
        threads.shutdown(wait=True, cancel_futures=True)

    def _interrupted(self, steps: list[Step], results: dict[Step, StepResult]) -> None:
        """What each step got to: finished ones keep their result, the others are interrupted."""
        for step, outcome in self._here:
            results[step] = outcome
        while not self._finished.empty():
            step, future = self._finished.get_nowait()
            if not future.cancelled():
                results[step] = future.result()
        for step in steps:
            if step not in results:
                results[step] = StepResult(step, INTERRUPTED, "the run was interrupted before it finished")
        self.interrupted = True
