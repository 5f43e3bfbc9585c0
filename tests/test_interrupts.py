"""A hung step and a stopped run: --step-timeout fails only that step; SIGTERM still writes the reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import REPO, Project, conv_model, recipe_dict, statuses
from fuzz_seed import seeded
from trtbuild.store.publish import read_manifest

TRIALS = 10  # runs signalled at a random moment, after one that runs to its end (half SIGINT, half SIGTERM)
HUNG_LOADER = '''
import time
from pathlib import Path


def batches():
    Path(__file__).with_name("loader-started").touch()
    time.sleep(3600)  # a loader stuck on a network mount
    yield {}
'''


def _hung_recipe(project, **extra) -> None:
    (project.root / "calib.py").write_text(HUNG_LOADER)
    data = recipe_dict("conv.onnx", precision="int8") | extra
    data["source"]["python_path"] = ["."]
    data["precision"] = {"calibration": {"loader": "calib:batches", "batches": 1}}
    project.write_recipe(data)


def test_step_timeout_kills_a_hung_step_and_fails_only_it(project):
    _hung_recipe(project)
    started = time.monotonic()
    # The limit is for every step: generous enough for the others on a loaded 2-core machine.
    code, report = project.build("--step-timeout", "8")
    assert time.monotonic() - started < 90
    assert code == 1
    steps = statuses(report)
    assert steps["check"] == steps["simplify"] == "built"
    assert steps["precision"] == "failed" and steps["engine"] == "skipped"
    precision = next(s for s in report["steps"] if s["step"] == "precision")
    assert precision["error"].startswith("timed out after 8 s (step timeout): the worker was killed")


def test_a_recipe_sets_its_own_step_timeout(project):
    _hung_recipe(project, step_timeout=7)
    code, report = project.build()
    assert code == 1 and "timed out after 7 s" in next(s for s in report["steps"] if s["step"] == "precision")["error"]


def test_sigterm_writes_the_reports_and_records_no_failure(project):
    _hung_recipe(project)
    report, junit = project.root / "report.json", project.root / "junit.xml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trtbuild", str(project.recipe), "--cache-dir", str(project.cache),
         "--report", str(report), "--junit", str(junit)],
        cwd=project.root, env=os.environ | {"PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (project.root / "loader-started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # what a CI timeout sends first
    assert proc.wait(timeout=30) == 130
    assert "interrupted" in proc.stderr.read()
    data = json.loads(report.read_text())
    steps = {s["step"]: s["status"] for s in data["steps"]}
    assert data["exit_code"] == 130 and not data["ok"]
    assert steps["check"] == "built" and steps["precision"] == "interrupted" and steps["engine"] == "interrupted"
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["precision"].find("error") is not None
    state = json.loads((project.cache / "state" / "conv.json").read_text())
    assert "precision" not in state  # an interrupted step is not a failed one
    assert not (project.cache / "out" / "conv").exists()  # out/ keeps the last complete build (none yet)


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has its SIGTERM handler installed (its first lines have run)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) & 1 << (signal.SIGTERM - 1))


def test_a_signal_at_any_moment_gives_exit_130_and_the_reports(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, workers included) or SIGTERM to trtbuild, at a random
    moment from its first line to its end: exit 130 with the reports, or, when the signal came after the
    reports were written, the run's own outcome. Never a step marked failed. The moments are drawn with the
    printed seed (tests/fuzz_seed.py), one in each tenth of a run, in an order and at a place within it
    that change each run."""
    rng, told = seeded("signal-at-any-moment")
    tenths = rng.sample(range(TRIALS), TRIALS)
    horizon = None
    interrupted = 0
    for trial in range(TRIALS + 1):
        project = Project(tmp_path / f"trial-{trial}")
        project.root.mkdir()
        project.write_model(conv_model())
        project.write_recipe(recipe_dict("conv.onnx"))
        report = project.root / "report.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "trtbuild", str(project.recipe), "--cache-dir", str(project.cache),
             "--report", str(report), "-j", str(1 + trial % 2)],
            cwd=project.root, env=os.environ | {"PYTHONPATH": str(REPO)}, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        while not _catches_sigterm(proc.pid):
            assert proc.poll() is None and time.monotonic() - started < 30
            time.sleep(0.001)
        signum = None
        if horizon is None:  # the first run goes to its end: how long a run lasts
            assert proc.wait(timeout=300) == 0
            horizon = time.monotonic() - started
        else:
            delay = horizon * (tenths[trial - 1] + rng.random()) / TRIALS
            time.sleep(delay)
            signum = signal.SIGINT if trial % 2 else signal.SIGTERM
            if proc.poll() is None:
                if signum == signal.SIGINT:
                    os.killpg(proc.pid, signum)  # a terminal's Ctrl-C reaches the workers too
                else:
                    proc.send_signal(signum)  # a CI timeout's first signal
            else:  # it ended first: runs take less than the first one did (it loaded TensorRT from disk)
                horizon = max(delay, 0.2)
        code = proc.wait(timeout=60)
        out, err = proc.communicate()
        where = f"{told}: trial {trial} ({signum and signum.name}), exit {code}: {err[-3000:]}"
        assert report.exists(), where
        data = json.loads(report.read_text())
        assert "Traceback" not in err, where
        assert code in (0, 130) and data["exit_code"] == code and data["ok"] == (code == 0), where
        steps = {s["step"]: s["status"] for s in data["steps"]}
        assert "failed" not in steps.values(), where
        state = json.loads((project.cache / "state" / "conv.json").read_text()) \
            if (project.cache / "state" / "conv.json").exists() else {}
        assert "failed" not in {e["status"] for e in state.values()}, where
        if code == 130:
            interrupted += 1
            assert "interrupted" in err, where
            assert all(s in ("built", "cached", "interrupted", "skipped") for s in steps.values()), where
        else:  # the signal came after the reports: the run's own outcome, its paths real
            assert all(Path(line.split("\t")[2]).exists() for line in out.splitlines() if line.count("\t") == 2)
        if (project.cache / "out" / "conv").exists():
            shown = read_manifest(project.cache / "out" / "conv")["files"]
            assert all((project.cache / "out" / "conv" / rel).exists() for rel in shown), where
    print(f"{interrupted} of {TRIALS} runs interrupted")
    assert interrupted >= TRIALS * 3 // 5, told
