"""The runner's scheduling, staleness, step building and publishing over an in-memory Disk and Executor
(trtbuild.execution.disk, executor): the real code paths of a run, in milliseconds."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from trtbuild.execution.progress import Progress
from trtbuild.execution.runner import Runner

RECIPE = SimpleNamespace(recipe=SimpleNamespace(name="net", step_timeout=None), file=Path("net.yaml"))


@dataclass(eq=False)
class FakeStep:
    """A step as the runner sees it: the attributes of trtbuild.planning.graph.Step it reads."""
    name: str
    deps: list = field(default_factory=list)
    skip_reason: str | None = None
    params: dict = field(default_factory=dict)
    recipe: object = field(default_factory=lambda: RECIPE)
    inputs: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)
    after: list = field(default_factory=list)
    target: object = None

    def __post_init__(self):
        self.id = self.name
        self.kind = SimpleNamespace(NAME=self.name, MAIN_OUTPUT="out", IMPORTS=(f"lib_{self.name}",))
        self.publish_dir = Path("net")

    @property
    def label(self) -> str:
        return f"net/{self.name}"


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class MemoryDisk:
    """The cache and the user's files, in dicts."""

    out = "/mem/out"

    def __init__(self):
        self.sources: dict[str, str] = {}  # step id -> its source file's content
        self.actions: dict[str, dict] = {}
        self.states: dict[str, dict] = {}
        self.moved: dict[str, list] = {}  # step id -> files its last run read that changed since
        self.made: dict[str, dict] = {}  # outdir -> outputs the executor left there
        self.published, self.logs, self.stopped = [], {}, False
        self.on_key = lambda step: None

    def using(self):
        return contextlib.nullcontext()

    def save(self): pass

    def key(self, step, upstream):
        self.on_key(step)
        inputs = {"src": {"(main)": digest(self.sources.get(step.id, ""))[:16]}}
        inputs |= {dep.name: {"out": record["outputs"]["out"]["digest"]} for dep, record in upstream.items()}
        components = {"kind": step.kind.NAME, "params": step.params, "inputs": inputs}
        return digest(components), components

    def action(self, step, key): return self.actions.get(key)

    def moved_reads(self, step, record): return self.moved.get(step.id, [])

    def note_used(self, key): pass

    def state(self, recipe): return dict(self.states.get(recipe, {}))

    def state_keys(self, recipe): return {sid: [e["key"], e["status"]] for sid, e in self.state(recipe).items()}

    def record_state(self, recipe, step_id, entry): self.states.setdefault(recipe, {})[step_id] = entry

    def reuse(self, step, components, state): return None

    def step_lock(self, key): return SimpleNamespace(acquire=lambda **_: True, release=lambda: None)

    def scratch(self, step, key): return Path(f"/mem/work/{step.id}"), Path(f"/mem/logs/{key}.log")

    def job(self, step, records, workdir, components, checks_sources, reuse):
        return {"kind": step.kind.NAME, "step": step.id, "outdir": str(workdir / "out"), "env": {},
                "source": components["inputs"]["src"]["(main)"], "context": step.context}

    def sources_moved(self, step, components): return None

    def log_error(self, log, error): self.logs[str(log)] = error

    def repro(self, job, step, key, workdir): return f"/mem/logs/{key}.repro"

    def outputs(self, workdir, written): return self.made.pop(str(workdir / "out"))

    def object_path(self, digest): return Path(f"/mem/objects/{digest}")

    def put_action(self, key, record): self.actions[key] = record

    def discard(self, workdir): pass

    def publish(self, steps, results, declared, lookup, report):
        self.published.append({s.id: results[s].status for s in steps})
        return []

    def pull(self, key): return False

    def share(self, key, record, replace=False): pass

    def remote_record(self, key): return None

    def stop(self): self.stopped = True


class MemoryExecutor:
    """Runs a job by writing its output into the disk's memory; `fail` names steps whose job fails,
    `hold` steps whose job waits for `release` (or kill_all), `meet` steps that wait for each other."""

    def __init__(self, disk: MemoryDisk, fail=(), hold=(), meet=(), pause: float = 0.0):
        self.disk, self.fail, self.hold, self.pause = disk, set(fail), set(hold), pause
        self.meet, self.barrier = set(meet), threading.Barrier(len(meet) or 1, timeout=2)
        self.ran, self.events, self.running, self.most = [], [], 0, 0
        self.release, self.held, self.killed, self.closed = threading.Event(), threading.Event(), False, False
        self._lock = threading.Lock()

    def run(self, task):
        step = task.job["step"]
        with self._lock:
            self.ran.append(step)
            self.events.append(("start", step))
            self.running += 1
            self.most = max(self.most, self.running)
        if step in self.hold:
            self.held.set()
            self.release.wait(2)
        elif step in self.meet:  # these wait for each other: they run at the same time or not at all
            self.barrier.wait()
        else:
            time.sleep(self.pause)
        with self._lock:
            self.running -= 1
            self.events.append(("end", step))
        if step in self.fail:
            return {"ok": False, "error": f"{step}: boom", "user_error": True, "meta": {}}
        self.disk.made[task.job["outdir"]] = {"out": {"digest": digest(step, task.job["source"]), "size": 1}}
        return {"ok": True, "meta": {"ran": step}}

    def kill_all(self):
        self.killed = True
        self.release.set()

    def close(self):
        self.closed = True


def graph() -> list[FakeStep]:
    """export -> check, export -> simplify -> engine -> verify (check and simplify are siblings)."""
    export = FakeStep("export")
    check = FakeStep("check", [export])
    simplify = FakeStep("simplify", [export])
    engine = FakeStep("engine", [simplify])
    verify = FakeStep("verify", [engine])
    return [export, check, simplify, engine, verify]


def run(disk, steps, jobs=1, **options):
    executor = options.pop("executor", None) or MemoryExecutor(disk)
    runner = Runner(None, Progress(stream=io.StringIO(), quiet=True), jobs=jobs, executor=executor, disk=disk,
                    **options)
    results = runner.run(steps)
    return {r.step.id: (r.status, r.reason) for r in results}, executor, runner


def statuses(report) -> dict[str, str]:
    return {step: status for step, (status, _) in report.items()}


def test_a_first_run_builds_every_step_in_dependency_order_and_commits_each_record():
    disk = MemoryDisk()
    report, executor, runner = run(disk, graph())
    assert statuses(report) == dict.fromkeys(["export", "check", "simplify", "engine", "verify"], "built")
    assert report["export"][1] == "never built"
    assert executor.ran.index("export") < executor.ran.index("simplify") < executor.ran.index("engine")
    assert len(disk.actions) == 5 and {r["step"] for r in disk.actions.values()} == set(executor.ran)
    assert {sid: e["status"] for sid, e in disk.states["net"].items()} == dict.fromkeys(executor.ran, "built")
    assert disk.published == [dict.fromkeys(["export", "check", "simplify", "engine", "verify"], "built")]
    engine = next(r for r in runner.results.values() if r.step.name == "engine")
    verify = next(r for r in runner.results.values() if r.step.name == "verify")
    assert verify.outputs == {"out": "/mem/out/net/out"} and engine.record["meta"] == {"ran": "engine"}
    # verify's file of the same name replaces engine's in out/: the report names engine's cached one
    assert engine.outputs == {"out": f"/mem/objects/{engine.record['outputs']['out']['digest']}"}
    assert executor.closed


def test_a_second_run_is_all_cache_hits_and_runs_nothing():
    disk = MemoryDisk()
    run(disk, graph())
    report, executor, _ = run(disk, graph())
    assert report == dict.fromkeys(report, ("cached", "up to date"))
    assert executor.ran == []


def test_a_changed_source_reruns_its_step_and_what_reads_it_but_not_its_sibling():
    disk = MemoryDisk()
    run(disk, graph())
    disk.sources["simplify"] = "new options"
    report, executor, _ = run(disk, graph())
    assert statuses(report) == {"export": "cached", "check": "cached", "simplify": "built", "engine": "built",
                                "verify": "cached"}
    assert report["simplify"][1].startswith("inputs.src.(main) changed (")
    assert report["engine"][1].startswith("inputs.simplify.out changed (")
    # The engine it rebuilt is the same bytes (its output depends on its own source only here): keys are
    # of content, so what reads the engine is still current.
    assert executor.ran == ["simplify", "engine"]


def test_a_dry_run_says_what_would_run_and_names_the_root_cause():
    disk = MemoryDisk()
    run(disk, graph())
    disk.sources["simplify"] = "new options"
    before = dict(disk.actions)
    report, executor, _ = run(disk, graph(), dry_run=True)
    assert statuses(report) == {"export": "cached", "check": "cached", "simplify": "would-run",
                                "engine": "would-run", "verify": "would-run"}
    cause = report["simplify"][1]
    assert report["engine"][1] == report["verify"][1] == f"{cause} (simplify reruns first)"
    assert executor.ran == [] and disk.actions == before and len(disk.published) == 1  # nothing written


def test_a_failure_skips_what_depends_on_it_and_its_siblings_go_on():
    disk = MemoryDisk()
    report, executor, runner = run(disk, graph(), executor=MemoryExecutor(disk, fail={"simplify"}))
    assert statuses(report) == {"export": "built", "check": "built", "simplify": "failed", "engine": "skipped",
                                "verify": "skipped"}
    assert report["engine"][1] == "simplify did not complete"
    assert report["verify"][1] == "engine did not complete"  # the chain, step by step
    assert "engine" not in executor.ran and "check" in executor.ran
    failed = next(r for r in runner.results.values() if r.step.name == "simplify")
    assert failed.error == "simplify: boom" and failed.user_error and failed.repro.endswith(".repro")
    assert disk.logs == {failed.log: "simplify: boom"}  # the worker wrote no log: the error is kept there
    assert disk.states["net"]["simplify"]["status"] == "failed"
    assert {r["step"] for r in disk.actions.values()} == {"export", "check"}  # nothing recorded for a failure
    report, executor, _ = run(disk, graph())  # fixed: only the failed step and what it blocked run
    assert report["simplify"][1] == "last attempt failed"
    assert executor.ran == ["simplify", "engine", "verify"]


def test_a_step_this_machine_cannot_run_is_skipped_with_its_reason_and_blocks_its_dependants():
    disk = MemoryDisk()
    steps = graph()
    steps[3].skip_reason = "no GPU runs sm86 plans here"
    report, executor, _ = run(disk, steps)
    assert report["engine"] == ("skipped", "no GPU runs sm86 plans here")
    assert report["verify"] == ("skipped", "engine did not complete")
    assert statuses(report)["simplify"] == "built" and set(executor.ran) == {"export", "check", "simplify"}


def test_force_reruns_the_named_step_only_and_files_read_while_it_ran_void_a_hit():
    disk = MemoryDisk()
    run(disk, graph())
    report, executor, _ = run(disk, graph(), force="check")
    assert report["check"] == ("built", "--force") and executor.ran == ["check"]
    disk.moved["export"] = ["model.py changed", "a.py changed", "b.py changed", "c.py changed"]
    report, executor, _ = run(disk, graph())
    assert report["export"] == ("built", "model.py changed, a.py changed, b.py changed ... (read while it ran)")
    assert statuses(report)["check"] == "cached"  # the same export output: the same key downstream


def test_jobs_run_independent_steps_together_and_never_a_step_before_its_dependencies():
    disk = MemoryDisk()
    roots = [FakeStep(f"export{i}") for i in range(4)]
    engines = [FakeStep(f"engine{i}", [root]) for i, root in enumerate(roots)]
    executor = MemoryExecutor(disk, meet={"export0", "export1"}, pause=0.005)
    report, executor, _ = run(disk, [*roots, *engines], jobs=2, executor=executor)
    assert set(statuses(report).values()) == {"built"}
    assert executor.most == 2  # -j 2: two at a time (the first two roots met), never more
    for i in range(4):
        assert executor.events.index(("end", f"export{i}")) < executor.events.index(("start", f"engine{i}"))
    other = MemoryDisk()
    _, serial, _ = run(other, [*roots, *engines], jobs=1, executor=MemoryExecutor(other, pause=0.005))
    assert serial.most == 1


def test_an_interrupt_kills_what_runs_keeps_what_finished_and_publishes_nothing():
    disk = MemoryDisk()
    slow, quick = FakeStep("slow"), FakeStep("quick")
    after_quick = FakeStep("after", [quick])
    last = FakeStep("last", [after_quick])
    executor = MemoryExecutor(disk, hold={"slow"})

    def ctrl_c(step):  # Ctrl-C arrives on the main thread while it settles `after`, with `slow` running
        if step is after_quick:
            assert executor.held.wait(2)
            raise KeyboardInterrupt

    disk.on_key = ctrl_c
    started = time.perf_counter()
    report, executor, runner = run(disk, [slow, quick, after_quick, last], jobs=2, executor=executor)
    assert time.perf_counter() - started < 1.5  # the held step ended when its worker was killed
    assert runner.interrupted and executor.killed and disk.stopped and executor.closed
    assert report == {"slow": ("interrupted", "the run was interrupted while it ran"),
                      "quick": ("built", "never built"),
                      "after": ("interrupted", "the run was interrupted before it finished"),
                      "last": ("interrupted", "the run was interrupted before it finished")}
    assert [r["step"] for r in disk.actions.values()] == ["quick"]  # nothing partial recorded
    assert disk.published == []  # out/ keeps the last complete build


def test_an_error_of_trtbuilds_own_fails_that_step_alone(capsys):
    disk = MemoryDisk()
    real_outputs = disk.outputs

    def broken(workdir, written):
        if str(workdir).endswith("/check"):
            raise RuntimeError("a bug")
        return real_outputs(workdir, written)

    disk.outputs = broken
    report, _, _ = run(disk, graph())
    assert report["check"] == ("failed", "internal error")
    assert statuses(report)["verify"] == "built"
    assert "RuntimeError: a bug" in capsys.readouterr().err  # the traceback of a bug is shown


def test_an_exception_that_is_not_a_stop_kills_the_workers_and_propagates():
    disk = MemoryDisk()
    executor = MemoryExecutor(disk)

    def crash(step):
        if step.name == "engine":
            raise SystemExit(3)

    disk.on_key = crash
    with pytest.raises(SystemExit):
        run(disk, graph(), executor=executor)
    assert executor.killed and disk.stopped and disk.published == []


def test_the_memory_disk_is_the_seam_the_real_one_is():
    """The fake answers what the real Disk answers, with the same arguments: it cannot drift from it."""
    import inspect

    from trtbuild.execution.disk import CacheDisk, Disk

    def methods(cls) -> dict[str, list[str]]:
        return {name: list(inspect.signature(fn).parameters) for name, fn in vars(cls).items()
                if callable(fn) and not name.startswith("_")}

    assert methods(MemoryDisk) == methods(CacheDisk) == methods(Disk)


def test_a_step_another_run_built_while_this_one_waited_for_its_lock_is_taken_from_the_cache():
    from filelock import Timeout

    disk = MemoryDisk()
    run(disk, graph())
    theirs = dict(disk.actions)  # what the other run commits while this one waits
    disk.actions.clear()
    waits = []

    class BusyLock:  # held by another run: it commits the step, then lets go
        def acquire(self, blocking=True, timeout=-1):
            if not blocking:
                raise Timeout("step.lock")
            waits.append(timeout)
            disk.actions.update(theirs)

        def release(self): pass

    disk.step_lock = lambda key: BusyLock()
    report, executor, _ = run(disk, graph())
    assert report["export"] == ("cached", "built by a concurrent run")
    assert executor.ran == [] and waits == [0.5]  # waited in slices, so a stop can end the wait
    assert set(statuses(report).values()) == {"cached"}
