"""Executes step graphs: dependency order, -j parallelism, locks, progress (workers: trtbuild.execution.pool)."""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from trtbuild.store.cache import Cache
from trtbuild.store import discovered as found_while_running
from trtbuild.planning.graph import Step
from trtbuild.execution.reasons import why_run
from trtbuild.planning.keys import key_components, portable, project_root, step_key
from trtbuild.steps import outputs_of
from trtbuild.steps.action import tool_version
from trtbuild.execution.executor import Executor, Task
from trtbuild.execution import weights_only
from trtbuild.execution.jobs import make_job, needs_own_process, sources_moved, upstream_objects
from trtbuild.execution.pool import WorkerPool
from trtbuild.execution.threads import BuildThreads
from trtbuild.execution.progress import Progress
from trtbuild.execution.shown import publish_current
from trtbuild.store.fsutil import create_new, write_new

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
    repro: str | None = None  # a standalone script that makes the failed step's library calls again
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


class Runner:
    def __init__(self, cache: Cache, progress: Progress, jobs: int = 1, dry_run: bool = False, remote=None,
                 step_timeout: float | None = None, force: str | None = None, executor: Executor | None = None):
        self.cache = cache
        self.step_timeout = step_timeout  # seconds; beats each recipe's step_timeout
        self.force = force  # "all" or a step kind: run those steps even when cached
        self._seen: set[str] = set()  # keys this run's own threads have locked (built, or found built)
        self.interrupted = False
        self.remote = remote  # a trtbuild.store.remote.Remote, or None
        self.progress = progress
        self.jobs = max(1, jobs)
        self.dry_run = dry_run
        self._given_executor = executor  # None: the local worker pool
        self._executor: Executor | None = None
        self._stopping = threading.Event()
        self._unfinished: set[Step] = set()
        self._states: dict[str, dict] = {}  # recipe -> {step id: [key, status]} of its state, read once per run
        self._environment: dict[str, dict] = {}  # what each step kind reads of the environment, this run
        self._out = str(cache.out)
        self._moved: dict[Step, str] = {}  # steps whose hit is void: files their last run read have changed
        self.results: dict[Step, StepResult] = {}  # as steps finish: what an interrupted run reports
        self.undelivered: list[StepResult] = []  # built or cached, but not in out/ (a publish that failed)

    def run(self, steps: list[Step], declared: list[Step] | None = None) -> list[StepResult]:
        """Run every step once its dependencies are done; results in the order of `steps`.
        `declared`: the recipes' own steps, when `steps` builds other targets (--target, --backend):
        out/ shows the current outputs of both."""
        results = self.results = {}
        blockers = {s: len(s.deps) for s in steps}
        dependents: dict[Step, list[Step]] = {s: [] for s in steps}
        for step in steps:
            for dep in step.deps:
                dependents[dep].append(step)
        finished: queue.Queue = queue.Queue()  # (step, its build's concurrent.futures.Future), from build threads
        here: collections.deque[tuple[Step, StepResult]] = collections.deque()  # settled on this thread
        self._executor = self._given_executor or WorkerPool(self.jobs)
        self._unfinished = {s for s in steps if not s.skip_reason}  # worth a warm spare worker?
        # Build threads block SIGINT / SIGTERM, and so do the workers they start (a blocked signal stays
        # blocked across exec): Ctrl-C reaches the whole process group, and a worker dying of it would
        # look like a failed step. The main thread handles the signal and kills the workers itself.
        with self.cache.using(), BuildThreads(self.jobs) as pool:

            def start(step: Step) -> None:
                deps = {d: results[d] for d in step.deps}
                # Most steps of a rebuild are settled by a lookup: do those here, without a thread hop.
                settled = self._settle(step, deps)
                if isinstance(settled, StepResult):
                    self.progress.finished(settled)
                    here.append((step, settled))  # no queue, no lock: taken before waiting on a thread
                    return

                def build() -> StepResult:
                    try:
                        result = self._build(step, *settled, deps)
                    except Exception as exc:
                        result = self._crashed(step, exc)
                    self.progress.finished(result)
                    return result

                pool.submit(build).add_done_callback(lambda f: finished.put((step, f)))

            try:
                for step in steps:
                    if not blockers[step]:
                        start(step)
                while len(results) < len(steps):
                    step, outcome = here.popleft() if here else finished.get()
                    results[step] = outcome if isinstance(outcome, StepResult) else outcome.result()
                    self._unfinished.discard(step)
                    for after in dependents[step]:
                        blockers[after] -= 1
                        if not blockers[after]:
                            start(after)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM (a CI timeout): stop, and say what each step got to
                self._stopping.set()
                if self.remote:
                    self.remote.stopping.set()  # a step waiting on the remote stops waiting
                self._executor.kill_all()
                pool.shutdown(wait=True, cancel_futures=True)  # running steps end at once: their workers are gone
                for step, outcome in here:
                    results[step] = outcome
                while not finished.empty():
                    step, outcome = finished.get_nowait()
                    if isinstance(outcome, StepResult) or not outcome.cancelled():
                        results[step] = outcome if isinstance(outcome, StepResult) else outcome.result()
                for step in steps:
                    if step not in results:
                        results[step] = StepResult(step, INTERRUPTED, "the run was interrupted before it finished")
                self.interrupted = True
            except BaseException:
                self._stopping.set()
                if self.remote:
                    self.remote.stopping.set()
                self._executor.kill_all()
                pool.shutdown(cancel_futures=True)
                raise
        self._executor.close()
        if not self.dry_run and not self.interrupted:  # out/ keeps the last complete build
            with self.cache.using():  # held shared, as building does: a gc waits until out/ is swapped in
                self._publish(steps, results, declared or [])
        self.cache.stat_cache.save()
        self.cache.save_log()
        return [results[s] for s in steps]

    def _crashed(self, step: Step, exc: Exception) -> StepResult:
        """The result of a step whose build raised: interrupted when the run is stopping (its worker was
        killed, the pool closed under it), else a failure of that step alone; the run goes on."""
        if self._stopping.is_set():
            return StepResult(step, INTERRUPTED, "the run was interrupted while it ran")
        if isinstance(exc, OSError):  # disk full, permissions
            return StepResult(step, FAILED, "cache I/O error", error=f"{type(exc).__name__}: {exc}")
        import traceback

        traceback.print_exc()  # a bug of trtbuild's: the report and the other steps go on
        return StepResult(step, FAILED, "internal error", error=f"{type(exc).__name__}: {exc}")

    def _publish(self, steps: list[Step], results: dict[Step, StepResult], declared: list[Step]) -> None:
        """out/<recipe>/ shows the current key of each of the recipe's steps (trtbuild.execution.shown), whatever
        subset this run built; what could not be delivered there fails the run."""
        self.undelivered += publish_current(self.cache, steps, results, declared, self._record_of,
                                            lambda text: self.progress.message(text, "bold red"))

    def _record_of(self, step: Step, key: str) -> dict | None:
        cached = self._cached(step, key, "up to date")
        return cached.record if cached else None

    def _settle(self, step: Step, deps: dict[Step, StepResult]) -> StepResult | tuple[str, dict]:
        """The step's result when no build is needed, else its (key, key components)."""
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
        components = key_components(step, self.cache, {d: r.record for d, r in deps.items() if r.record},
                                    self._environment)
        key = step_key(components, self.cache.log)
        cached = None if self._forced(step) else self._cached(step, key, "up to date")
        if cached and not self.dry_run:
            self._note_current(step, key, components)
            if self.remote:
                self.remote.share(key, cached.record, self.cache)
        if cached is None and self.dry_run and self.remote:
            record = self.remote.lookup(key)  # its record (not its files) gives the steps after it their keys
            if record:
                return StepResult(step, WOULD_PULL, "on the remote cache", key=key, record=record)
        return cached or (key, components)

    def _cached(self, step: Step, key: str, reason: str) -> StepResult | None:
        record = self.cache.get_action(key, outputs_of(step.kind))
        if record is None:
            return None
        found = record.get("discovered")
        if found is None:  # most steps: their key holds all they read
            found = {}
        elif not found_while_running.valid(found):
            self.progress.warn(f"{step.label}: ignoring the cached result {key[:12]}: its record of the files "
                               "read while it ran is malformed")
            return None
        moved = found and found_while_running.changed(found, project_root(step.recipe), self.cache.stat_cache,
                                                      tool_version)
        if moved:  # the key holds; what the step's code read while it ran does not
            self._moved[step] = f"{', '.join(moved[:3])}{' ...' if len(moved) > 3 else ''} (read while it ran)"
            return None
        if self.dry_run:
            outputs = {}
        else:
            outputs = self._published(step, record["outputs"])
            self.cache.note_used(key)
        return StepResult(step, CACHED, reason, outputs=outputs, key=key, record=record)

    def _published(self, step: Step, outputs: dict) -> dict[str, str]:
        """Where the outputs appear once the run publishes (see _publish)."""
        folder = f"{self._out}/{step.publish_dir}"  # strings: a no-op build asks once per hit
        return {name: f"{folder}/{name}" for name in outputs}  # plain file names (store.validate)

    def _build(self, step: Step, key: str, components: dict, deps: dict[Step, StepResult]) -> StepResult:
        state = self.cache.read_state(step.recipe.recipe.name)
        forced = self._forced(step)
        reason = "--force" if forced else self._moved.pop(step, None) or why_run(step, state, components)
        # only weights moved: the export reuses its last graph (not on a farm, whose nodes lack its files)
        reuse = None if forced or getattr(self._executor, "checks_sources", False) else \
            weights_only.plan(step, components, self.cache, state)
        if reuse:
            reason = weights_only.reason(reuse)
        if self.dry_run:
            return StepResult(step, WOULD_RUN, reason, key=key)
        from filelock import Timeout  # here: a no-op build takes no step lock

        lock = self.cache.step_lock(key)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            ours = key in self._seen  # the same step of two recipes (a shared model)
            self.progress.waiting(step, "another recipe of this run is building it" if ours else
                                  "another trtbuild run is building it")
            while True:  # in slices, so an interrupted run stops waiting for another run's step
                try:
                    lock.acquire(timeout=0.5)
                    break
                except Timeout:
                    if self._stopping.is_set():
                        return StepResult(step, INTERRUPTED, "interrupted while waiting for another run")
        ours = key in self._seen
        self._seen.add(key)
        try:
            # Another recipe of this run, or another run, may have built it while we waited for the lock.
            cached = None if forced else self._cached(
                step, key, "built by another recipe of this run" if ours else "built by a concurrent run")
            if cached:
                return cached
            if not forced and self.remote and self.remote.pull(key, self.cache):
                pulled = self._cached(step, key, "pulled from the remote cache")
                if pulled:  # else what it read while it ran differs here: build it
                    self._record_state(step, key, components, "built")
                    return pulled
                reason = self._moved.pop(step, reason)
            result = self._execute(step, key, components, reason, deps, reuse)
            if self.remote and result.status == BUILT:  # pushed where the remote lacks it; --force replaces it
                self.remote.share(key, result.record, self.cache, replace=forced)
            return result
        finally:
            lock.release()

    def _spare_imports(self, running: Step) -> tuple[str, ...] | None:
        """What a spare worker should import while `running` runs: the libraries of the steps still to
        come (eight engines need no ONNX Runtime); None when no step follows."""
        coming = [s for s in list(self._unfinished) if s is not running]
        if not coming:
            return None
        return tuple(sorted({m for s in coming for m in getattr(s.kind, "IMPORTS", ())}))

    def _forced(self, step: Step) -> bool:
        return self.force in ("all", step.name)

    def _execute(self, step: Step, key: str, components: dict, reason: str, deps: dict[Step, StepResult],
                 reuse: dict | None = None) -> StepResult:
        if self._stopping.is_set():  # interrupted while it waited (on the remote, say): start nothing
            return StepResult(step, INTERRUPTED, "the run was interrupted before it started", key=key)
        self.progress.started(step, reason)
        workdir = self.cache.workdir(step.name)
        log = self.cache.logs / f"{key}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        os.close(create_new(log))  # made here, by this user: the worker writes into it, never through a link
        started = time.perf_counter()
        try:
            outdir = workdir / "out"
            outdir.mkdir()
            job = make_job(step, {d: r.record for d, r in deps.items()}, workdir, components, self.cache,
                           checks_sources=getattr(self._executor, "checks_sources", False))
            if reuse:
                job["context"] = job["context"] | weights_only.context(reuse, self.cache, workdir)
            task = Task(job, log, isolated=needs_own_process(step), spare=self._spare_imports(step),
                        timeout=self.step_timeout or step.recipe.recipe.step_timeout, label=step.label,
                        objects=upstream_objects(step, components), target=step.target,
                        precision=step.params.get("precision", "fp32"))
            result = self._executor.run(task)
            node = result.get("node")
            seconds = time.perf_counter() - started
            if self._stopping.is_set():  # its worker was killed by the interruption: not a failure of the step
                return StepResult(step, INTERRUPTED, "the run was interrupted while it ran", seconds, key=key,
                                  log=str(log), node=node)
            if result["ok"] and (moved := sources_moved(step, components, self.cache)):
                result = {"ok": False, "user_error": False, "error": moved}
            if not result["ok"]:
                if not log.exists() or not log.stat().st_size:  # a worker that died silently: the log still tells
                    write_new(log, result["error"] + "\n")
                self._record_state(step, key, components, "failed")
                return StepResult(step, FAILED, reason, seconds, key=key, meta=result.get("meta") or {},
                                  error=result["error"], user_error=result.get("user_error", False), log=str(log),
                                  repro=self._repro(job, step, self.cache.logs / f"{key}.repro", workdir), node=node)
            reason = weights_only.outcome(reason, result["meta"])
            written = result.get("written") or {}  # digests taken as the worker wrote (stat-checked)
            outputs = {p.name: dict(zip(("digest", "size"), self.cache.ingest(p, written.get(p.name))))
                       for p in sorted(outdir.iterdir())}
            discovered = result["meta"].pop("discovered", None)
            record = {
                "key": key, "recipe": step.recipe.recipe.name, "step": step.id, "components": components,
                "outputs": outputs, "meta": result["meta"], "seconds": round(seconds, 3), "created": time.time(),
            }
            if node:
                record["node"] = node
            if discovered and any(discovered.values()):
                root = project_root(step.recipe)
                record["discovered"] = found_while_running.relative(discovered, lambda p: portable(p, root))
            self.cache.put_action(key, record)  # the commit point: from here on the result is valid
            self._record_state(step, key, components, "built")
            return StepResult(step, BUILT, reason, seconds, self._published(step, outputs), key, record, log=str(log),
                              node=node)
        finally:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)

    def _repro(self, job: dict, step: Step, folder: Path, workdir: Path) -> str | None:
        """A standalone script reproducing the failed step (trtbuild.execution.repro); a failure to write one is
        only a warning: the step's own error is what matters."""
        from trtbuild.execution.repro import write_repro

        try:
            return str(write_repro(job, folder, step.label, scratch=workdir))
        except Exception as exc:
            self.progress.warn(f"no repro script for {step.label}: {type(exc).__name__}: {exc}")
            return None

    def _note_current(self, step: Step, key: str, components: dict) -> None:
        """A cache hit is what out/ now shows: --dry-run and status explain the next change against it.
        Written only when it differs from the recorded entry, so a no-op build writes nothing."""
        recipe = step.recipe.recipe.name
        if recipe not in self._states:
            self._states[recipe] = self.cache.state_keys(recipe)
        if self._states[recipe].get(step.id) != [key, "built"]:
            self._record_state(step, key, components, "built")

    def _record_state(self, step: Step, key: str, components: dict, status: str) -> None:
        """Remember the step's last key components: what --dry-run and status diff against."""
        entry = {"key": key, "components": components, "time": time.time(), "status": status}
        self.cache.record_state(step.recipe.recipe.name, step.id, entry)

