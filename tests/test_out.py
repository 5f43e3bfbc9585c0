"""What out/, `trtbuild path` and the exit code say is true: out/ shows each target's current key
whatever subset a run built, a printed path exists and stays valid, a publish that failed fails the
run, and a stopped run is interrupted, never failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO, conv_model, recipe_dict
from trtbuild.commands.cli import main
from trtbuild.commands.deploy import DeployError, find_plan
from trtbuild.store.hashing import digest_file
from trtbuild.store.publish import read_manifest


def _targets(project, *specs: str, **engine) -> None:
    data = recipe_dict("conv.onnx", **engine)
    data["targets"] = list(specs)
    project.write_recipe(data)


def _status(project, capsys) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["status", str(project.recipe), "--cache-dir", str(project.cache), "--json"])
    return code, json.loads(capsys.readouterr().out)["matrix"]["conv"]


def _engines(report: dict) -> dict[str, dict]:
    return {s["target"].rsplit("-", 1)[1]: s for s in report["steps"] if s["step"] == "engine"}


def test_a_subset_target_run_leaves_the_other_targets_current_outputs(project, capsys):
    _targets(project, "tensorrt-rtx", "tensorrt-rtx:sm86")
    code, first = project.build()
    assert code == 0
    sm86 = Path(_engines(first)["sm86"]["outputs"]["model.plan"])
    sm86_digest = digest_file(sm86)

    code, subset = project.build("--target", "tensorrt-rtx")  # one of the recipe's two targets
    assert code == 0 and list(_engines(subset)) == ["portable"]
    assert digest_file(sm86) == sm86_digest  # the other target's folder is still there, unchanged
    assert find_plan("conv", project.cache, target="tensorrt-rtx:sm86") == sm86
    code, cells = _status(project, capsys)
    assert code == 0 and {c["state"] for c in cells.values()} == {"fresh"}

    # A target the recipe does not list, asked for once: shown beside the recipe's own, its printed path real.
    code, extra = project.build("--target", "tensorrt-rtx:sm120")
    printed = capsys.readouterr().out
    sm120 = Path(_engines(extra)["sm120"]["outputs"]["model.plan"])
    assert code == 0 and str(sm120) in printed and sm120.exists() and sm86.exists()

    # A new model, rebuilt for one target: the other's current key was never built, so it has no folder,
    # and status says why (the recipe's own targets only: sm120 was a one-off).
    project.write_model(conv_model(seed=3))
    code, third = project.build("--target", "tensorrt-rtx")
    assert code == 0 and _engines(third)["portable"]["status"] == "built"
    assert not sm86.parent.exists() and not sm120.parent.exists()
    portable = Path(_engines(third)["portable"]["outputs"]["model.plan"])
    # The sm86 folder is gone: the portable plan, which covers sm86, is the one that runs there.
    assert find_plan("conv", project.cache, target="tensorrt-rtx:sm86") == portable
    code, cells = _status(project, capsys)
    states = {t.rsplit("-", 1)[1]: c for t, c in cells.items()}
    assert code == 1 and states["portable"]["state"] == "fresh"
    assert states["sm86"]["state"] == "stale" and "changed" in states["sm86"]["reason"]
    shown = read_manifest(project.cache / "out" / "conv")["steps"]
    assert [s["current"] for sid, s in shown.items() if sid.endswith("-sm86")] == [False, False]

    # Building the recipe again brings sm86 back; a no-op build after it changes nothing.
    code, full = project.build()
    assert code == 0 and _engines(full)["sm86"]["status"] == "built" and sm86.exists()


CALIBRATION = '''
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np


def batches():
    # stuck on a dead network mount: a switch outside the user's files (the system's /dev/shm), which no
    # key holds, so the cached result stays current while a forced rerun hangs
    here = Path(__file__).parent
    if Path("/dev/shm").joinpath(f"{here.parent.name}-{here.name}-hang").exists():
        time.sleep(3600)
    rng = np.random.default_rng(0)
    for _ in range(4):
        yield {"x": rng.standard_normal((2, 3, 16, 16)).astype(np.float32)}
'''


def test_a_failed_forced_rerun_leaves_the_current_outputs_published(project, capsys):
    (project.root / "calib.py").write_text(CALIBRATION)
    switch = Path("/dev/shm") / f"{project.root.parent.name}-{project.root.name}-hang"
    data = recipe_dict("conv.onnx", precision="int8")
    data["source"]["python_path"] = ["."]
    data["precision"] = {"calibration": {"loader": "calib:batches", "batches": 4}, "max_relative_error": 0.5}
    project.write_recipe(data)
    code, first = project.build()
    assert code == 0
    plan = Path(_engines(first)["portable"]["outputs"]["model.plan"])
    quantized = project.cache / "out" / "conv" / "int8" / "model.onnx"
    digests = digest_file(plan), digest_file(quantized)

    switch.touch()
    try:
        code, forced = project.build("--force", "precision", "--step-timeout", "3")
    finally:
        switch.unlink()
    steps = {s["step"]: s for s in forced["steps"]}
    assert code == 1 and not forced["ok"]
    assert steps["precision"]["status"] == "failed" and steps["precision"]["key"] == \
        next(s for s in first["steps"] if s["step"] == "precision")["key"]  # the same key: its result stands
    assert steps["engine"]["status"] == "skipped"
    assert (digest_file(plan), digest_file(quantized)) == digests
    shown = read_manifest(project.cache / "out" / "conv")["steps"]
    assert all(s["current"] for sid, s in shown.items() if not sid.startswith("verify"))
    assert find_plan("conv", project.cache, target="tensorrt-rtx") == plan
    (project.root / "report.json").unlink()  # the loader listed this folder: as it was when it ran
    code, cells = _status(project, capsys)
    assert code == 0 and [c["state"] for c in cells.values()] == ["fresh"], cells


def _printed_paths(stdout: str) -> list[str]:
    return [field for line in stdout.splitlines() for field in line.split("\t") if field.startswith("/")]


def test_a_publish_on_a_full_disk_fails_the_run_and_prints_no_missing_path(project, capsys):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    out = project.cache / "out"
    out.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(out)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with open(out / "filler", "wb", buffering=0) as filler:  # fill it: the cache itself is on another disk
            with pytest.raises(OSError, match="No space left"):
                while True:
                    filler.write(b"\0" * 4096)
        capsys.readouterr()
        junit = project.root / "junit.xml"
        code, report = project.build("--junit", str(junit))
        captured = capsys.readouterr()
        engine = next(s for s in report["steps"] if s["step"] == "engine")
        assert code == 1 and not report["ok"] and report["exit_code"] == 1
        assert engine["status"] == "built" and engine["outputs"] == {}  # built and cached, not delivered
        assert "not published to" in engine["error"] and "No space left on device" in engine["error"]
        assert "not published to" in captured.err
        cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
        assert "No space left" in cases[f"engine [{engine['target']}]"].find("failure").get("message")
        assert "model.plan" not in captured.out
        assert all(Path(p).exists() for p in _printed_paths(captured.out))
        assert not (out / "conv").exists() and [p.name for p in out.iterdir()] == ["filler"]

        (out / "filler").unlink()  # space again: a no-op build delivers what the cache holds
        code, again = project.build()
        captured = capsys.readouterr()
        assert code == 0 and {s["status"] for s in again["steps"] if s["step"] != "verify"} == {"cached"}, captured.err
        printed = _printed_paths(captured.out)
        assert len(printed) == 1 and Path(printed[0]).exists() and printed[0].endswith("model.plan")
    finally:
        subprocess.run(["umount", "-l", str(out)], check=True)


READER = '''
import os, sys, time
from pathlib import Path
from trtbuild.commands.deploy import find_plan

stop = Path(sys.argv[1])
calls = failures = vanished = 0
errors = []
while not stop.exists():
    calls += 1
    try:
        plan = find_plan("conv", target="tensorrt-rtx")  # the cache from TRTBUILD_CACHE_DIR
    except Exception as exc:
        failures += 1
        errors.append(f"{type(exc).__name__}: {exc}")
        continue
    if not os.path.exists(plan):
        vanished += 1
        errors.append(f"vanished: {plan}")
print(calls, failures, vanished, *errors[:5], sep="\\n")
'''


def test_path_stays_valid_during_50_publishes(project):
    """A service polling `trtbuild path` while builds publish: every answer is a path that exists."""
    variants = [recipe_dict("conv.onnx", optimization_level=level) for level in (0, 1)]
    for data in variants:  # both engines in the cache: each build below only publishes
        project.write_recipe(data)
        assert project.build()[0] == 0
    stop = project.root / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(stop)], stdout=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": str(REPO), "TRTBUILD_CACHE_DIR": str(project.cache)})
    link = project.cache / "out" / "conv"
    shown = {os.readlink(link)}
    try:
        time.sleep(1)  # the reader is polling
        for i in range(50):
            project.write_recipe(variants[i % 2])
            code, report = project.build()
            assert code == 0 and report["steps"][2]["status"] == "cached"
            shown.add(os.readlink(link))
    finally:
        stop.touch()
        output, _ = reader.communicate(timeout=60)
    calls, failures, vanished, *errors = output.splitlines()
    assert len(shown) == 51  # every build swapped in a new out/conv/
    assert int(calls) > 50 and (int(failures), int(vanished)) == (0, 0), errors
    assert find_plan("conv", project.cache, target="tensorrt-rtx") == \
        link / report["steps"][2]["target"] / "model.plan"


def test_path_honours_trtbuild_cache_dir(project, monkeypatch, capsys):
    assert project.build()[0] == 0
    monkeypatch.chdir(project.root.parent)
    monkeypatch.setenv("TRTBUILD_CACHE_DIR", str(project.cache))
    plan = find_plan("conv", target="tensorrt-rtx")
    assert plan.is_relative_to(project.cache / "out" / "conv") and plan.exists()
    capsys.readouterr()
    assert main(["path", "conv", "--target", "tensorrt-rtx"]) == 0
    assert capsys.readouterr().out.strip() == str(plan)
    monkeypatch.delenv("TRTBUILD_CACHE_DIR")
    with pytest.raises(DeployError, match="no plans for 'conv'"):
        find_plan("conv", target="tensorrt-rtx")  # ./cache holds none


def test_quiet_no_op_build_prints_nothing_for_steps_this_machine_never_runs(project, capsys):
    assert project.build()[0] == 0
    capsys.readouterr()
    assert project.build("-q")[0] == 0
    err = capsys.readouterr().err
    assert "verify" not in err and "skipped" not in err
    project.model.write_bytes(b"not onnx")  # check fails: the steps it blocks are still said under -q
    assert project.build("-q")[0] != 0
    out, err = capsys.readouterr()
    assert "failed     conv/check" in err and "skipped    conv/engine" in err and "check did not complete" in err
    assert "conv/verify" not in err
    # stdout's line for the engine names the step that failed, however many steps lie between
    [line] = [line for line in out.splitlines() if line.startswith("conv\t")]
    assert line.split("\t")[2].startswith("skipped: check failed: ") and "not a valid ONNX model" in line


def test_two_recipe_files_of_one_name_are_told_that_they_share_out(project, capsys, monkeypatch):
    """Built in separate runs into one cache (one run refuses two recipes of one name), they would take
    turns at out/conv without a word; the publish says so, and a rebuild of the same file does not."""
    assert project.build()[0] == 0
    other = project.root / "elsewhere"
    other.mkdir()
    (other / "conv.onnx").write_bytes(project.model.read_bytes())
    data = recipe_dict("conv.onnx", workspace="128MiB")
    (other / "conv.yaml").write_text(json.dumps(data))
    capsys.readouterr()
    assert main([str(other / "conv.yaml"), "--cache-dir", str(project.cache)]) == 0
    err = capsys.readouterr().err
    assert (f"warning: out/conv was published from {project.recipe} and now from {other / 'conv.yaml'}: "
            "two recipes named 'conv' share out/conv") in err
    assert read_manifest(project.cache / "out" / "conv")["source"] == str(other / "conv.yaml")
    assert main([str(other / "conv.yaml"), "--cache-dir", str(project.cache)]) == 0  # the same file: all quiet
    assert "share out/conv" not in capsys.readouterr().err
    monkeypatch.chdir(other)  # the same file spelt another way is still the same file
    assert main(["conv.yaml", "--cache-dir", str(project.cache)]) == 0
    assert "share out/conv" not in capsys.readouterr().err
    (other / "conv.yaml").rename(other / "renamed.yaml")  # a recipe renamed is no second recipe
    assert main(["renamed.yaml", "--cache-dir", str(project.cache)]) == 0
    assert "share out/conv" not in capsys.readouterr().err
    assert read_manifest(project.cache / "out" / "conv")["source"] == str(other / "renamed.yaml")


def test_a_manifest_that_is_not_a_mapping_is_published_afresh(project):
    assert project.build()[0] == 0
    manifest = project.cache / "out" / "conv" / ".trtbuild-build.json"
    manifest.write_text("[1, 2]")  # valid JSON, not what trtbuild writes
    code, report = project.build()
    assert code == 0 and report["ok"]
    assert read_manifest(project.cache / "out" / "conv")["source"] == str(project.recipe)
