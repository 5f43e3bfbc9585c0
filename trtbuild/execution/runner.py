"""A run of a step graph, put together from its parts: the order (trtbuild.execution.schedule), which steps
are stale (staleness), building one (step_build) on an executor (pool, farm_executor), and what the run
leaves behind (publishing), all over the cache through one seam (disk)."""

from __future__ import annotations

import threading

from trtbuild.execution.disk import CacheDisk, Disk
from trtbuild.execution.executor import Executor
from trtbuild.execution.pool import WorkerPool
from trtbuild.execution.progress import Progress
from trtbuild.execution.publishing import Publisher
from trtbuild.execution.results import INTERRUPTED, StepResult  # noqa: F401 (commands import them from here)
from trtbuild.execution.schedule import Scheduler
from trtbuild.execution.shown import replaced
from trtbuild.execution.staleness import Staleness
from trtbuild.execution.step_build import StepBuild
from trtbuild.planning.graph import Step
from trtbuild.store.cache import Cache


class Runner:
    def __init__(self, cache: Cache | None, progress: Progress, jobs: int = 1, dry_run: bool = False, remote=None,
                 step_timeout: float | None = None, force: str | None = None, executor: Executor | None = None,
                 disk: Disk | None = None):
        """`disk`: what the run reads and writes, instead of `cache` and `remote` (a test's own one);
        `executor`: where steps run, None for the local worker pool."""
        self.disk = disk or CacheDisk(cache, remote)
        self.progress = progress
        self.jobs = max(1, jobs)
        self.dry_run = dry_run
        self.step_timeout = step_timeout  # seconds; beats each recipe's step_timeout
        self.force = force  # "all" or a step kind: run those steps even when cached
        self._given_executor = executor
        self._pool: WorkerPool | None = None  # started ahead of the run by warm_up()
        self.interrupted = False
        self.results: dict[Step, StepResult] = {}  # as steps finish: what an interrupted run reports
        self.publisher = Publisher(self.disk, lambda text: progress.message(text, "bold red"))

    @property
    def undelivered(self) -> list[StepResult]:
        """Built or cached, but not in out/ (a publish that failed)."""
        return self.publisher.undelivered

    def warm_up(self) -> None:
        """Start workers now, while this process still reads and plans the recipes (for a first build, where
        steps will run): one loading what an ONNX model's first step imports (onnx, and a backend that loads
        without a GPU), and at -j 2 or more a second loading the backend, for an engine that may start
        beside it (trtbuild.execution.ahead). Nothing for a cluster executor or a dry run."""
        if self._given_executor is not None or self._pool is not None or self.dry_run:
            return
        from trtbuild.backends import REGISTRY, backend
        from trtbuild.steps import load_kind

        backends = tuple(backend(b).MODULE for b in REGISTRY if backend(b).PRELOAD)
        self._pool = WorkerPool(self.jobs)
        if self.jobs > 1:
            self._pool.prestart(backends)
        self._pool.prestart(tuple(dict.fromkeys([*load_kind("check").IMPORTS, *backends])), min(self.jobs, 2))

    def close(self) -> None:
        """Stop a worker warm_up() started for a run that did not come (no valid recipe)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def run(self, steps: list[Step], declared: list[Step] | None = None) -> list[StepResult]:
        """Run every step once its dependencies are done; results in the order of `steps`.
        `declared`: the recipes' own steps, when `steps` builds other targets (--target, --backend):
        out/ shows the current outputs of both."""
        results = self.results = {}
        self.publisher.replaced = replaced([*(declared or []), *steps])
        executor = self._given_executor or self._pool or WorkerPool(self.jobs)
        self._pool = None
        staleness = Staleness(self.disk, self.publisher, self.progress.warn, self.dry_run, self.force)

        def stop() -> None:
            self.disk.stop()
            executor.kill_all()

        stopping = threading.Event()
        build = StepBuild(self.disk, executor, staleness, self.publisher, self.progress, stopping,
                          lambda: scheduler.unfinished, self.step_timeout, self.jobs)
        # A step may build ahead of its gates where a job can be cancelled, and never in a dry run
        ahead = not self.dry_run and self.jobs > 1 and hasattr(executor, "cancel")
        scheduler = Scheduler(staleness.settle, build.build, self.progress, self.jobs, stop, stopping,
                              staleness.stale if ahead else None, build.cancel)
        with self.disk.using():
            scheduler.run(steps, results)
        self.interrupted = scheduler.interrupted
        executor.close()
        if not self.dry_run and not self.interrupted:  # out/ keeps the last complete build
            with self.disk.using():  # held shared, as building does: a gc waits until out/ is swapped in
                self.publisher.publish(steps, results, declared or [], staleness.record_of)
        self.disk.save()
        return [results[s] for s in steps]
