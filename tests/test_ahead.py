"""Steps ahead of their gates (trtbuild.execution.ahead) and steps of one key built once per run, over the
in-memory Disk and Executor of test_scheduler.py (the real scheduler, step build and staleness), plus a
real build whose check fails while its engine builds ahead of it."""

from __future__ import annotations

import threading

from test_scheduler import FakeStep, MemoryDisk, MemoryExecutor, run, statuses


class CancellingExecutor(MemoryExecutor):
    """The memory executor with cancel(task): a held job ends at once, as a killed worker's does."""

    def __init__(self, disk, fail=(), hold=(), wait_for=None, **options):
        super().__init__(disk, fail=fail, hold=hold, **options)
        self.cancelled, self.wait_for = [], wait_for or {}  # step -> event its job waits for before it ends

    def run(self, task):
        step = task.job["step"]
        if step in self.wait_for:
            assert self.wait_for[step].wait(2)
        if task.cancelled is not None and task.cancelled.is_set():
            return {"ok": False, "error": "cancelled before it started"}
        result = super().run(task)
        if step in self.cancelled:
            return {"ok": False, "error": "worker process died (exit code -9)"}
        return result

    def cancel(self, task):
        self.cancelled.append(task.job["step"])
        self.release.set()


def gated(engine_ahead: bool = True) -> list[FakeStep]:
    """export -> engine, with check (of export's output) as the engine's gate."""
    export = FakeStep("export")
    check = FakeStep("check", [export])
    engine = FakeStep("engine", [export])
    engine.after = [check]
    engine.deps = [export, check]
    engine.kind.AHEAD_OF_GATES = engine_ahead
    verify = FakeStep("verify", [engine])
    return [export, check, engine, verify]


def test_an_engine_builds_while_its_check_runs_and_is_recorded_once_the_check_passed():
    disk = MemoryDisk()
    check_running = threading.Event()
    executor = CancellingExecutor(disk, hold={"check"})
    real_run = executor.run

    def observed(task):  # the engine's job runs to its end while the check is still held
        if task.job["step"] == "engine":
            assert executor.held.wait(2)
            result = real_run(task)
            assert not disk.states.get("net", {}).get("engine")  # nothing recorded before the check passed
            check_running.set()
            executor.release.set()
            return result
        return real_run(task)

    executor.run = observed
    report, executor, runner = run(disk, gated(), jobs=2, executor=executor)
    assert check_running.is_set()
    assert statuses(report) == dict.fromkeys(["export", "check", "engine", "verify"], "built")
    assert executor.events.index(("start", "engine")) < executor.events.index(("end", "check"))
    assert {r["step"] for r in disk.actions.values()} == {"export", "check", "engine", "verify"}
    assert disk.states["net"]["engine"]["status"] == "built" and executor.cancelled == []


def test_a_check_that_fails_cancels_the_engine_building_ahead_and_nothing_of_it_is_recorded():
    disk = MemoryDisk()
    engine_started = threading.Event()
    executor = CancellingExecutor(disk, fail={"check"}, hold={"engine"},
                                  wait_for={"check": engine_started})
    real_run = executor.run

    def observed(task):
        if task.job["step"] == "engine":
            engine_started.set()
        return real_run(task)

    executor.run = observed
    report, executor, runner = run(disk, gated(), jobs=2, executor=executor)
    assert report["check"][0] == "failed"
    assert report["engine"] == ("skipped", "check did not complete")  # as if it had waited
    assert report["verify"] == ("skipped", "engine did not complete")
    assert executor.cancelled == ["engine"]  # stopped as soon as the check failed, not left to finish
    assert {r["step"] for r in disk.actions.values()} == {"export"}  # no record, so never served as good
    assert "engine" not in disk.states["net"] and disk.published == [statuses(report)]
    engine = next(r for r in runner.results.values() if r.step.name == "engine")
    assert engine.error is None and engine.key is None  # its worker's death is not reported as its failure


def set_when_done(executor, step: str, event: threading.Event) -> None:
    """`event` is set once the executor has run `step`'s job."""
    real_run = executor.run

    def observed(task):
        result = real_run(task)
        if task.job["step"] == step:
            event.set()
        return result

    executor.run = observed


def test_an_engine_that_finished_ahead_of_a_failed_check_is_discarded():
    disk = MemoryDisk()
    engine_done = threading.Event()
    executor = CancellingExecutor(disk, fail={"check"}, wait_for={"check": engine_done})
    set_when_done(executor, "engine", engine_done)
    report, executor, _ = run(disk, gated(), jobs=2, executor=executor)
    assert executor.events.index(("end", "engine")) < executor.events.index(("end", "check"))
    assert report["engine"] == ("skipped", "check did not complete")
    assert {r["step"] for r in disk.actions.values()} == {"export"} and "engine" not in disk.states["net"]
    # fixed: the check and the engine run again (nothing of the discarded engine was kept)
    report, executor, _ = run(disk, gated(), jobs=2, executor=CancellingExecutor(disk))
    assert statuses(report) == {"export": "cached", "check": "built", "engine": "built", "verify": "built"}
    assert report["engine"][1] == "never built"


def test_a_cached_engine_is_not_taken_before_its_check_passes():
    disk = MemoryDisk()
    run(disk, gated(), jobs=2, executor=CancellingExecutor(disk))
    disk.sources["check"] = "a stricter check"  # the check reruns (and now fails); the engine's key holds
    report, executor, _ = run(disk, gated(), jobs=2, executor=CancellingExecutor(disk, fail={"check"}))
    assert report["engine"] == ("skipped", "check did not complete")  # not "cached": the gate failed
    assert executor.ran == ["check"]


def test_nothing_runs_ahead_at_one_job_in_a_dry_run_or_where_the_kind_does_not_allow_it():
    for jobs, options, ahead in ((1, {}, True), (2, {"dry_run": True}, True), (2, {}, False)):
        disk = MemoryDisk()
        if options:
            run(disk, gated(), jobs=jobs, executor=CancellingExecutor(disk))
            disk.sources["export"] = "changed"
        executor = CancellingExecutor(disk, pause=0.01)
        report, executor, _ = run(disk, gated(engine_ahead=ahead), jobs=jobs, executor=executor, **options)
        if options:
            assert report["engine"] == ("would-run", report["export"][1] + " (export reruns first)")
        else:
            assert executor.events.index(("end", "check")) < executor.events.index(("start", "engine"))


def test_an_executor_that_cannot_cancel_gets_nothing_ahead():
    disk = MemoryDisk()
    executor = MemoryExecutor(disk, pause=0.01)  # no cancel()
    report, executor, _ = run(disk, gated(), jobs=2, executor=executor)
    assert set(statuses(report).values()) == {"built"}
    assert executor.events.index(("end", "check")) < executor.events.index(("start", "engine"))


def recipes_of_one_model(count: int) -> tuple[MemoryDisk, list]:
    """`count` recipes of one model: each a check (one key for all) and an engine that may build ahead of it."""
    disk = MemoryDisk()
    steps = []
    for i in range(count):
        check = FakeStep("check")
        check.id = f"check{i}"
        disk.sources[check.id] = "the model"
        engine = FakeStep(f"engine{i}", [check])
        engine.after = [check]
        engine.kind.AHEAD_OF_GATES = True
        steps += [check, engine]
    real_key = disk.key
    disk.key = lambda step, upstream: real_key(step, {}) if step.name == "check" else real_key(step, upstream)
    return disk, steps


def test_steps_of_one_key_build_once_and_the_others_wait_without_a_build_thread():
    """Eight recipes of one model: one check builds, seven wait for it without taking a build thread, so at
    -j 2 the second thread builds the first engine meanwhile."""
    disk, steps = recipes_of_one_model(3)
    all_settled = threading.Event()  # the check ends once every check was looked at
    disk.on_key = lambda step: step.id == "check2" and all_settled.set()
    executor = CancellingExecutor(disk, meet={"check0", "engine0"}, wait_for={"check0": all_settled}, pause=0.005)
    report, executor, _ = run(disk, steps, jobs=2, executor=executor)
    assert executor.ran.count("check0") == 1 and not {"check1", "check2"} & set(executor.ran)
    assert report["check1"] == report["check2"] == ("cached", "built by another recipe of this run")
    assert statuses(report) == {**dict.fromkeys(["check1", "check2"], "cached"),
                                     **dict.fromkeys(["check0", "engine0", "engine1", "engine2"], "built")}
    assert executor.most == 2  # the check and the first engine met: built at the same time


def test_a_real_check_that_fails_leaves_no_engine_of_the_build_that_ran_ahead(project, capsys):
    """TensorRT-RTX builds this engine (the builder ignores the recipe's dtype); the check refuses the recipe.
    Whether the engine's job was killed or had finished, nothing of it is recorded or published."""
    from conftest import recipe_dict

    data = recipe_dict("conv.onnx")
    data["inputs"]["x"]["dtype"] = "float16"  # the model's input is float32
    data["onnx"]["simplify"] = False  # the engine's only gate is the check
    project.write_recipe(data)
    code, report = project.build("-j", "2")
    err = capsys.readouterr().err
    assert "ahead of check" in err  # the engine started while the check ran
    assert code == 2 and statuses_of(report) == {"check": "failed", "engine": "skipped"}
    assert "inputs.x.dtype: recipe says float16, the model has float32" in report["steps"][0]["error"]
    engine = next(s for s in report["steps"] if s["step"] == "engine")
    assert engine["reason"] == "check did not complete" and not engine.get("error")
    assert project.actions() == []  # no record: never served from the cache as good
    assert not list((project.cache / "out").rglob("*.plan"))
    data["inputs"]["x"]["dtype"] = "float32"  # fixed: both build, and the engine is kept
    project.write_recipe(data)
    code, report = project.build("-j", "2")
    assert code == 0 and statuses_of(report) == {"check": "built", "engine": "built"}
    assert {a["step"].split("@")[0] for a in project.actions()} == {"check", "engine"}


def statuses_of(report: dict) -> dict[str, str]:
    return {s["step"]: s["status"] for s in report["steps"] if s["step"] != "verify"}


def test_the_next_job_starts_while_a_step_commits_and_jobs_stay_within_j():
    """A build thread storing what its step made (hashing, fsync) holds no job slot: at -j 1 the next step's
    job runs meanwhile, and never two jobs at once."""
    disk = MemoryDisk()
    first, second = FakeStep("first"), FakeStep("second")
    second_ran = threading.Event()
    real_put = disk.put_action

    def slow_commit(key, record):
        if record["step"] == "first":
            assert second_ran.wait(2), "the second job waited for the first step's commit"
        real_put(key, record)

    disk.put_action = slow_commit
    executor = MemoryExecutor(disk)
    set_when_done(executor, "second", second_ran)
    report, executor, _ = run(disk, [first, second], jobs=1, executor=executor)
    assert statuses(report) == {"first": "built", "second": "built"} and executor.most == 1


def test_when_the_build_of_a_shared_key_fails_the_steps_waiting_for_it_build_it_again():
    """Steps of one key wait for the first; if it failed, each tries again (as it did waiting on its lock),
    and the engines ahead of them learn each verdict."""
    disk, steps = recipes_of_one_model(2)
    report, executor, _ = run(disk, steps, jobs=2, executor=CancellingExecutor(disk, fail={"check0", "check1"}))
    assert report["check0"][0] == report["check1"][0] == "failed" and executor.ran.count("check0") == 1
    assert "check1" in executor.ran  # the second tried it again instead of taking a failure as a result
    assert report["engine0"] == ("skipped", "check did not complete") == report["engine1"]
    assert not {r["step"] for r in disk.actions.values()}
