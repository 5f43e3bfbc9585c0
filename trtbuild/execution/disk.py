"""What a run asks of the cache and the filesystem, in a step's terms (ninja's DiskInterface).

Scheduling, step execution and publishing (trtbuild.execution.staleness, step_build, publishing) touch
no file themselves: they ask a `Disk`. `CacheDisk` is the real one, over a trtbuild.store.cache.Cache
and the remote cache if any; a test gives them an in-memory one and runs a whole schedule in
milliseconds (tests/test_scheduler.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from trtbuild.execution import weights_only
from trtbuild.execution.jobs import make_job, sources_moved
from trtbuild.planning.graph import Step
from trtbuild.planning.keys import key_components, project_root, step_key
from trtbuild.steps import outputs_of
from trtbuild.steps.action import tool_version
from trtbuild.store import discovered as found_while_running
from trtbuild.store.cache import Cache
from trtbuild.store.fsutil import create_new, write_new


class Disk:  # the methods any Disk has (a protocol in effect: typing is not imported on a no-op build)
    """The seam. Keys and records: what scheduling reads (key, action, moved_reads, state, state_keys,
    reuse) and writes (note_used, record_state, put_action, publish). A step's files: its lock, scratch
    folder, job, outputs. The shared cache: pull, share, remote_record, stop. `out`: the out/ folder."""

    out: str

    def using(self) -> contextlib.AbstractContextManager: ...
    def save(self) -> None: ...
    def key(self, step: Step, upstream: dict[Step, dict]) -> tuple[str, dict]: ...
    def action(self, step: Step, key: str) -> dict | None: ...
    def moved_reads(self, step: Step, record: dict) -> list[str]: ...  # ValueError: malformed
    def note_used(self, key: str) -> None: ...
    def state(self, recipe: str) -> dict: ...
    def state_keys(self, recipe: str) -> dict[str, list]: ...
    def record_state(self, recipe: str, step_id: str, entry: dict) -> None: ...
    def reuse(self, step: Step, components: dict, state: dict) -> dict | None: ...
    def step_lock(self, key: str): ...
    def scratch(self, step: Step, key: str) -> tuple[Path, Path]: ...
    def job(self, step: Step, records: dict, workdir: Path, components: dict, checks_sources: bool,
            reuse: dict | None) -> dict: ...
    def sources_moved(self, step: Step, components: dict) -> str | None: ...
    def log_error(self, log: Path, error: str) -> None: ...
    def repro(self, job: dict, step: Step, key: str, workdir: Path) -> str: ...
    def outputs(self, workdir: Path, written: dict) -> dict[str, dict]: ...
    def object_path(self, digest: str) -> Path: ...
    def put_action(self, key: str, record: dict) -> None: ...
    def discard(self, workdir: Path) -> None: ...
    def publish(self, steps: list[Step], results: dict, declared: list[Step], lookup, report) -> list: ...
    def pull(self, key: str) -> bool: ...
    def share(self, key: str, record: dict, replace: bool = False) -> None: ...
    def remote_record(self, key: str) -> dict | None: ...
    def stop(self) -> None: ...


class CacheDisk:
    """The Disk of a real run: the local cache, plus the remote cache when one is given."""

    def __init__(self, cache: Cache, remote=None):
        self.cache, self.remote = cache, remote
        self.out = str(cache.out)  # a string: a no-op build joins it once per cache hit
        self._environment: dict[str, dict] = {}  # what each step kind reads of the environment, this run

    # Keys and records

    def using(self):
        return self.cache.using()  # held shared, as building does: a gc waits

    def save(self) -> None:
        self.cache.stat_cache.save()
        self.cache.save_log()

    def key(self, step: Step, upstream: dict[Step, dict]) -> tuple[str, dict]:
        components = key_components(step, self.cache, upstream, self._environment)
        return step_key(components, self.cache.log), components

    def action(self, step: Step, key: str) -> dict | None:
        return self.cache.get_action(key, outputs_of(step.kind))

    def moved_reads(self, step: Step, record: dict) -> list[str]:
        """What the step's code read while it ran and has changed since; ValueError for a record of
        those reads that is malformed."""
        found = record.get("discovered")
        if found is None:  # most steps: their key holds all they read
            return []
        if not found_while_running.valid(found):
            raise ValueError("its record of the files read while it ran is malformed")
        if not found:
            return []
        return found_while_running.changed(found, project_root(step.recipe), self.cache.stat_cache, tool_version)

    def note_used(self, key: str) -> None:
        self.cache.note_used(key)

    def state(self, recipe: str) -> dict:
        return self.cache.read_state(recipe)

    def state_keys(self, recipe: str) -> dict[str, list]:
        return self.cache.state_keys(recipe)

    def record_state(self, recipe: str, step_id: str, entry: dict) -> None:
        self.cache.record_state(recipe, step_id, entry)

    def reuse(self, step: Step, components: dict, state: dict) -> dict | None:
        return weights_only.plan(step, components, self.cache, state)

    def put_action(self, key: str, record: dict) -> None:
        self.cache.put_action(key, record)

    def publish(self, steps: list[Step], results: dict, declared: list[Step], lookup, report) -> list:
        from trtbuild.execution.shown import publish_current

        return publish_current(self.cache, steps, results, declared, lookup, report)

    # A step's files

    def step_lock(self, key: str):
        return self.cache.step_lock(key)

    def scratch(self, step: Step, key: str) -> tuple[Path, Path]:
        """(the step's scratch folder, with out/ in it; its log file, made new here by this user: the
        worker writes into it, never through a link)."""
        workdir = self.cache.workdir(step.name)
        log = self.cache.logs / f"{key}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.close(create_new(log))
            (workdir / "out").mkdir()
        except BaseException:
            self.discard(workdir)
            raise
        return workdir, log

    def job(self, step: Step, records: dict, workdir: Path, components: dict, checks_sources: bool,
            reuse: dict | None) -> dict:
        job = make_job(step, records, workdir, components, self.cache, checks_sources=checks_sources)
        if reuse:
            job["context"] = job["context"] | weights_only.context(reuse, self.cache, workdir)
        return job

    def sources_moved(self, step: Step, components: dict) -> str | None:
        return sources_moved(step, components, self.cache)

    def log_error(self, log: Path, error: str) -> None:
        """A worker that died silently: the log still tells."""
        if not log.exists() or not log.stat().st_size:
            write_new(log, error + "\n")

    def repro(self, job: dict, step: Step, key: str, workdir: Path) -> str:
        from trtbuild.execution.repro import write_repro

        return str(write_repro(job, self.cache.logs / f"{key}.repro", step.label, scratch=workdir))

    def outputs(self, workdir: Path, written: dict) -> dict[str, dict]:
        """The step's outputs stored by content; `written`: digests taken as the worker wrote them."""
        return {p.name: dict(zip(("digest", "size"), self.cache.ingest(p, written.get(p.name))))
                for p in sorted((workdir / "out").iterdir())}

    def object_path(self, digest: str) -> Path:
        return self.cache.object_path(digest)

    def discard(self, workdir: Path) -> None:
        shutil.rmtree(workdir, ignore_errors=True)

    # The shared cache

    def pull(self, key: str) -> bool:
        return bool(self.remote and self.remote.pull(key, self.cache))

    def share(self, key: str, record: dict, replace: bool = False) -> None:
        if self.remote:
            self.remote.share(key, record, self.cache, replace=replace)

    def remote_record(self, key: str) -> dict | None:
        """Its record (not its files): what gives a dry run's later steps their keys."""
        return self.remote.lookup(key) if self.remote else None

    def stop(self) -> None:
        if self.remote:
            self.remote.stopping.set()  # a step waiting on the remote stops waiting
