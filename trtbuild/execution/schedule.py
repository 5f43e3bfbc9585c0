"""The order of a run: each step starts once its dependencies are done, up to -j jobs at a time (job slots:
trtbuild.execution.step_build; twice as many build threads, so one storing what its step made lets the
next job start); a step after one that failed or was skipped is skipped, its siblings go on; a stop
(Ctrl-C, SIGTERM) ends the run and says what each step got to. Pure logic over the steps: settling a step (a cache lookup) and building it
are handed in (trtbuild.execution.staleness, step_build).

Two steps of a run with one key (eight recipes of one model share their check) build once: the second
waits for the first without holding a build thread, then finds its result in the cache. A step whose kind
allows it (AHEAD_OF_GATES) may start while gates it waits on still run, when a build thread is free and
the step must build (trtbuild.execution.ahead): it is kept only once they pass."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable

from trtbuild.execution.ahead import Ahead
from trtbuild.execution.results import BUILT, CACHED, FAILED, INTERRUPTED, SKIPPED, WOULD_RUN, StepResult
from trtbuild.execution.threads import BuildThreads
from trtbuild.planning.graph import Step

Settle = Callable[[Step, dict], "StepResult | tuple[str, dict]"]  # (step, deps' results) -> its result or (key, components)
Build = Callable[..., StepResult]  # (step, key, components, deps' results, ahead: Ahead | None) -> its result
Stale = Callable[[Step, dict], "tuple[str, dict] | None"]  # (step, deps' results) -> (key, components) if it must build


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
                 stopping: threading.Event | None = None, stale: Stale | None = None,
                 cancel: Callable[[Step], None] = lambda step: None):
        self.settle, self.build, self.progress = settle, build, progress
        self.jobs = max(1, jobs)
        self.threads = 2 * self.jobs
        self.stop = stop  # kills what runs (the executor's workers), ends waits on the remote
        self.stopping = stopping or threading.Event()  # set first when the run stops; builds look at it
        # Steps ahead of their gates: `stale` says whether one must build (no cache hit; None: never ahead),
        # `cancel` stops one whose gate failed.
        self.stale, self.cancel = stale, cancel
        self.unfinished: set[Step] = set()  # steps to come that may build: worth a warm spare worker?
        self.interrupted = False

    def run(self, steps: list[Step], results: dict[Step, StepResult]) -> None:
        """Run every step once its dependencies are done, filling `results` as steps finish (what an
        interrupted run reports). Ctrl-C or SIGTERM (KeyboardInterrupt): the run stops, every step not
        finished is interrupted, and `interrupted` is set; any other exception stops it and propagates."""
        self._finished: queue.Queue = queue.Queue()  # (step, its build's concurrent.futures.Future), from build threads
        self._here: collections.deque = collections.deque()  # (step, result) settled on this thread
        self.unfinished = {s for s in steps if not s.skip_reason}
        self._results = results
        self._started: set[Step] = set()
        self._building: dict[str, Step] = {}  # key -> the step building it
        self._followers: dict[str, list] = {}  # key -> [(step, settled, deps)] waiting for that build
        self._key_of: dict[Step, str] = {}  # steps handed to a build thread
        self._running: set[Step] = set()  # handed to a build thread, no result yet: how many threads are taken
        self._in_flight: set[Step] = set()  # building, or waiting for a build of the same key
        self._done: dict[Step, threading.Event] = {}  # gates a step ahead waits on: set once they have a result
        self._ahead: dict[Step, list[Step]] = {}  # gate -> the steps building ahead of it
        self._parked: dict[Step, None] = {}  # could start ahead of their gates when a build thread frees
        # Build threads block SIGINT / SIGTERM, and so do the workers they start (a blocked signal stays
        # blocked across exec): Ctrl-C reaches the whole process group, and a worker dying of it would
        # look like a failed step. The main thread handles the signal and kills the workers itself.
        # Twice -j build threads: the step build holds -j job slots (trtbuild.execution.step_build), so a thread
        # that commits what its step made, or waits for the verdict of a gate, leaves its slot to the next step.
        with BuildThreads(self.threads) as threads:
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
        self._dependents = dependents
        for step in steps:
            if not blockers[step]:
                self._start(step, results, threads)
        while len(results) < len(steps):
            step, result = self._next()
            results[step] = result
            self.unfinished.discard(step)
            self._in_flight.discard(step)
            self._ended(step, result, threads)
            for after in dependents[step]:
                blockers[after] -= 1
                if not blockers[after] and after not in self._started:
                    self._start(after, results, threads)
                elif self.stale and after not in self._started:
                    self._consider(after, threads)
            self._unpark(threads)

    def _next(self) -> tuple[Step, StepResult]:
        """The next step to finish: one settled on this thread first, else the next build to end."""
        if self._here:
            return self._here.popleft()
        step, future = self._finished.get()
        return step, future.result()

    def _start(self, step: Step, results: dict[Step, StepResult], threads: BuildThreads) -> None:
        self._started.add(step)
        deps = {d: results[d] for d in step.deps}
        # Most steps of a rebuild are settled by a lookup: do those here, without a thread hop.
        settled = from_dependencies(step, deps) or self.settle(step, deps)
        if isinstance(settled, StepResult):
            self.progress.finished(settled)
            self._here.append((step, settled))  # no queue, no lock: taken before waiting on a thread
            return
        key = settled[0]
        if key in self._building:  # another recipe's step of the same key builds it: wait without a thread
            self._followers.setdefault(key, []).append((step, settled, deps))
            self._in_flight.add(step)
            self.unfinished.discard(step)  # no spare worker warms up for it
            self._dependents_may_start(step, threads)
            return
        self._submit(step, settled, deps, None, threads)

    def _submit(self, step: Step, settled: tuple, deps: dict, ahead: Ahead | None, threads: BuildThreads) -> None:
        key = settled[0]
        self._building.setdefault(key, step)
        self._key_of[step] = key
        self._in_flight.add(step)
        self._running.add(step)

        def build() -> StepResult:
            result = self.build(step, *settled, deps, ahead) if ahead else self.build(step, *settled, deps)
            self.progress.finished(result)
            return result

        threads.submit(build).add_done_callback(lambda f: self._finished.put((step, f)))
        self._dependents_may_start(step, threads)

    def _dependents_may_start(self, step: Step, threads: BuildThreads) -> None:
        """`step` is now building: what waits on it only as a gate may start ahead of it."""
        if self.stale:
            for after in self._dependents.get(step, ()):
                if step in after.after:
                    self._consider(after, threads)

    def _consider(self, step: Step, threads: BuildThreads) -> None:
        """Start `step` ahead of its gates if its kind allows it, everything else it needs is done, every gate
        left is building, a build thread is free and the step must build (no cache hit)."""
        if step in self._started or step.skip_reason or not getattr(step.kind, "AHEAD_OF_GATES", False):
            return
        gates = [g for g in dict.fromkeys(step.after) if g not in self._results]
        if not gates or any(g not in self._in_flight for g in gates):
            return
        done = {d: self._results[d] for d in step.deps if d in self._results}
        if len(done) + len(gates) < len(set(step.deps)) or from_dependencies(step, done):
            return  # an input is not made yet, or one did not complete (its own start says so)
        if len(self._running) >= self.threads:
            self._parked[step] = None  # every build thread is taken: when one frees
            return
        settled = self.stale(step, done)
        if settled is None or settled[0] in self._building:
            return  # a cache hit (taken once the gates pass), or another step builds this key
        self._started.add(step)
        for gate in gates:
            self._done.setdefault(gate, threading.Event())
            self._ahead.setdefault(gate, []).append(step)
        self._submit(step, settled, done, Ahead(gates, lambda: self._verdict(step, gates)), threads)

    def _verdict(self, step: Step, gates: list[Step]) -> StepResult | None:
        """On a build thread: wait until every gate has a result; None when all passed, else the step's result."""
        for gate in gates:
            while not self._done[gate].wait(0.2):
                if self.stopping.is_set():
                    break
        verdicts = {g: self._results.get(g) for g in gates}
        if self.stopping.is_set() or any(r is None or r.status == INTERRUPTED for r in verdicts.values()):
            return StepResult(step, INTERRUPTED, "the run was interrupted while it ran")
        return from_dependencies(step, verdicts)

    def _ended(self, step: Step, result: StepResult, threads: BuildThreads) -> None:
        """`step` has its result: steps ahead of it learn it (and stop if it did not pass); steps of its key go on."""
        self._running.discard(step)
        if step in self._done:
            if result.status not in (BUILT, CACHED):
                for ahead in self._ahead.get(step, ()):
                    if ahead not in self._results:
                        self.cancel(ahead)
            self._done[step].set()
        key = self._key_of.get(step)
        if key is not None and self._building.get(key) is step:
            del self._building[key]
            # Built: each finds it in the cache. Failed: the first builds it again, the others wait for its lock.
            for follower, settled, deps in self._followers.pop(key, []):
                self._submit(follower, settled, deps, None, threads)

    def _unpark(self, threads: BuildThreads) -> None:
        """Build threads are free: consider the steps parked for one, in order, while some are (each once:
        one that no longer qualifies is considered again by what changes that)."""
        while self._parked and len(self._running) < self.threads:
            step = next(iter(self._parked))
            del self._parked[step]
            self._consider(step, threads)

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
