"""A first build starts a worker while it reads and plans its recipes (trtbuild.execution.runner.warm_up);
a no-op, a dry run and a run of invalid recipes leave no worker behind, and a no-op starts none."""

from __future__ import annotations

from conftest import recipe_dict, statuses
from trtbuild.execution import pool


def _spawned(monkeypatch) -> list:
    """Every worker the run starts, with what it was told to load."""
    spawned = []
    real = pool.Worker.__init__

    def counting(self, preload=()):
        real(self, preload)
        spawned.append((self, preload))

    monkeypatch.setattr(pool.Worker, "__init__", counting)
    return spawned


def _gone(worker) -> bool:
    worker.proc.poll()
    return worker.proc.returncode is not None


def test_a_first_build_warms_a_worker_early_and_a_no_op_starts_none(project, monkeypatch):
    data = recipe_dict("conv.onnx")
    data["onnx"]["simplify"] = False
    project.write_recipe(data)
    spawned = _spawned(monkeypatch)
    code, report = project.build("-j", "2")
    assert code == 0 and statuses(report) == {"check": "built", "engine": "built"}
    # started before any step was planned: one for the check, one for an engine beside it
    assert [preload for _, preload in spawned[:2]] == [("tensorrt_rtx",), ("onnx", "tensorrt_rtx")]
    assert all(_gone(w) for w, _ in spawned)  # each stopped when the run ended
    spawned.clear()
    code, report = project.build("-j", "2")
    assert code == 0 and set(statuses(report).values()) == {"cached"}
    assert spawned == []  # a no-op starts no process
    code, report = project.build("--dry-run", "--cache-dir", str(project.root / "other-cache"))
    assert spawned == []  # a dry run builds nothing: no worker either


def test_a_first_build_of_an_invalid_recipe_stops_the_worker_it_warmed(project, monkeypatch, capsys):
    data = recipe_dict("conv.onnx")
    data["engine"]["workspce"] = "1GiB"
    project.write_recipe(data)
    spawned = _spawned(monkeypatch)
    code, _ = project.build()
    assert code == 2 and "engine.workspce: unknown key" in capsys.readouterr().err
    assert len(spawned) == 1 and _gone(spawned[0][0])  # started while the recipe was read (-j 1), stopped after


def test_a_step_takes_the_idle_worker_that_loaded_its_modules_and_least_else():
    def idle(*preload):
        worker = object.__new__(pool.Worker)  # no process: only what the choice reads
        worker.preload = set(preload)
        return worker

    workers = pool.WorkerPool(2)
    workers._idle = [idle("tensorrt_rtx"), idle("onnx", "tensorrt_rtx"), idle()]
    assert workers._best(("onnx",)) == 1  # the check: the worker that loaded onnx
    assert workers._best(("tensorrt_rtx",)) == 0  # an engine: not the one the check wants
    assert workers._best(()) == workers._best(("torch",)) == -1  # else the last one to go idle
