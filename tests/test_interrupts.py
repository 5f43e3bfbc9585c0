"""A hung step and a stopped run: --step-timeout fails only that step; SIGTERM still writes the reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

from conftest import REPO, recipe_dict, statuses

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
    code, report = project.build("--step-timeout", "3")
    assert time.monotonic() - started < 60
    assert code == 1
    steps = statuses(report)
    assert steps["check"] == steps["simplify"] == "built"
    assert steps["precision"] == "failed" and steps["engine"] == "skipped"
    precision = next(s for s in report["steps"] if s["step"] == "precision")
    assert precision["error"].startswith("timed out after 3 s (step timeout): the worker was killed")


def test_a_recipe_sets_its_own_step_timeout(project):
    _hung_recipe(project, step_timeout=2)
    code, report = project.build()
    assert code == 1 and "timed out after 2 s" in next(s for s in report["steps"] if s["step"] == "precision")["error"]


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
