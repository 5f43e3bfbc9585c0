"""Bad inputs, killed runs and concurrent runs: clear errors, nothing recorded as good, no corruption."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, conv_model, recipe_dict, statuses
from trtbuild.commands.cli import main
from trtbuild.store.hashing import digest_file


def assert_cache_consistent(cache: Path) -> None:
    """Every action record names objects that exist and whose bytes match their digest."""
    for path in (cache / "actions").glob("*/*.json"):
        record = json.loads(path.read_text())
        for out in record["outputs"].values():
            obj = cache / "objects" / out["digest"][:2] / out["digest"]
            assert digest_file(obj) == out["digest"], f"corrupt object for {path.name}"


def test_file_that_is_not_onnx_fails_check(project, capsys):
    project.model.write_bytes(b"this is not a protobuf\n")
    code, report = project.build()
    assert code == 1 and not report["ok"]
    assert statuses(report) == {"check": "failed", "simplify": "skipped", "engine": "skipped"}
    assert "is not a valid ONNX model" in report["steps"][0]["error"]
    assert project.actions() == []


def test_unsupported_op_names_node_and_op_type(project):
    project.write_model(conv_model(extra_op="Det"))
    data = recipe_dict("conv.onnx")
    data["onnx"]["simplify"] = False  # a determinant of random data is too ill-conditioned for onnxsim's check
    project.write_recipe(data)
    code, report = project.build()
    assert code == 1
    # The check asks the backend's parser, before any engine step.
    assert statuses(report) == {"check": "failed", "engine": "skipped"}
    error = report["steps"][0]["error"]
    assert "node 'det_node' (Det): tensorrt-rtx cannot import it" in error
    assert "export the model without it" in error
    assert project.actions() == []
    code, again = project.build("--dry-run")
    assert again["steps"][0]["reason"] == "last attempt failed"


def test_recipe_that_does_not_match_the_model_exits_2(project):
    data = recipe_dict("conv.onnx")
    data["inputs"] = {"images": data["inputs"]["x"]}
    project.write_recipe(data)
    code, report = project.build()
    assert code == 2
    error = report["steps"][0]["error"]
    assert f"{project.recipe}:6: inputs.images: the model has no input 'images' (its inputs: x)" in error
    assert project.actions() == []


def test_too_small_workspace_fails_the_build_with_tensorrt_message(project):
    project.write_recipe(recipe_dict("conv.onnx", workspace=1))
    code, report = project.build()
    # TensorRT-RTX may fit this tiny graph in no workspace at all; if it fails, the reason must be shown.
    if code == 1:
        assert "TensorRT failed to build the engine" in report["steps"][2]["error"]
    else:
        assert statuses(report)["engine"] == "built"


def _spawn_build(recipe: Path, cache: Path, report: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trtbuild", str(recipe), "--cache-dir", str(cache), "--report", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
    )


def _example(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    return tmp_path / "recipes" / "resnet_block.yaml"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_sigkill_during_engine_build_then_rerun_completes(tmp_path):
    recipe, cache = _example(tmp_path), tmp_path / "cache"
    proc = _spawn_build(recipe, cache, tmp_path / "killed.json")
    deadline = time.time() + 120
    while not list((cache / "tmp").glob("engine-*/out")):
        assert proc.poll() is None and time.time() < deadline, "the build ended before its engine step started"
        time.sleep(0.02)
    workers = _children(proc.pid)
    assert workers  # the engine's worker, and a spare warming up
    os.kill(proc.pid, signal.SIGKILL)  # the runner only: its workers must notice and stop by themselves
    proc.wait()
    deadline = time.time() + 10
    while any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in workers):
        assert time.time() < deadline, "worker processes outlived the killed runner"
        time.sleep(0.1)
    assert not (tmp_path / "killed.json").exists()
    steps = {json.loads(p.read_text())["step"].split("@")[0] for p in (cache / "actions").glob("*/*.json")}
    assert steps == {"check", "simplify"}  # the killed engine left nothing that looks valid
    assert_cache_consistent(cache)

    rerun = _spawn_build(recipe, cache, tmp_path / "rerun.json")
    output = rerun.communicate(timeout=300)[0].decode()
    assert rerun.returncode == 0, output
    report = json.loads((tmp_path / "rerun.json").read_text())
    assert statuses(report) == {"check": "cached", "simplify": "cached", "engine": "built"}
    assert_cache_consistent(cache)


def test_sigkill_at_many_points_never_corrupts_the_cache(tmp_path):
    recipe, cache = _example(tmp_path), tmp_path / "cache"
    for delay in (0.3, 0.9, 1.6, 2.4):
        proc = _spawn_build(recipe, cache, tmp_path / "r.json")
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert_cache_consistent(cache)
        shutil.rmtree(cache / "actions", ignore_errors=True)  # force every step to run again next time
    final = _spawn_build(recipe, cache, tmp_path / "final.json")
    assert final.wait(timeout=300) == 0
    assert json.loads((tmp_path / "final.json").read_text())["ok"]
    assert_cache_consistent(cache)


def test_two_concurrent_runs_build_each_step_once(tmp_path):
    recipe, cache = _example(tmp_path), tmp_path / "cache"
    procs = [_spawn_build(recipe, cache, tmp_path / f"r{i}.json") for i in range(2)]
    for proc in procs:
        output = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode == 0, output
    reports = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2)]
    for step in ("check", "simplify", "engine"):
        assert sorted(statuses(r)[step] for r in reports) == ["built", "cached"], step
    plans = {r["steps"][2]["outputs"]["model.plan"] for r in reports}
    assert len(plans) == 1 and os.path.getsize(plans.pop()) > 100_000
    assert len(list((cache / "actions").glob("*/*.json"))) == 3
    assert_cache_consistent(cache)


def test_status_reports_fresh_stale_and_missing(project, capsys):
    args = [str(project.recipe), "--cache-dir", str(project.cache)]
    assert main(["status", *args, "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)["steps"]
    assert [r["state"] for r in rows] == ["missing", "missing", "missing", "skipped"]
    assert "needs a GPU" in rows[3]["reason"]
    project.build()
    capsys.readouterr()
    assert main(["status", *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in report["steps"]] == ["fresh"] * 3 + ["skipped"]
    [(target, cell)] = report["matrix"]["conv"].items()
    assert target.startswith("tensorrt-rtx-") and cell == {"state": "fresh", "reason": ""}
    project.write_recipe(recipe_dict("conv.onnx", optimization_level=2))
    assert main(["status", *args, "--steps"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("fresh    conv/check")
    assert out[2].startswith("stale    conv/engine") and "params.optimization_level: 0 -> 2" in out[2]
    assert main(["status", *args]) == 1
    matrix = capsys.readouterr().out.splitlines()
    assert matrix[0].split() == ["recipe", target] and matrix[1].split() == ["conv", "stale"]
    assert f"conv [{target}]: stale: params.optimization_level: 0 -> 2" in matrix[-1]


def test_gc_removes_only_unreferenced_objects(project, capsys):
    project.build()
    stray = project.cache / "objects" / "ff" / ("f" * 64)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"left by a killed run")
    (project.cache / "tmp" / "engine-x").mkdir(parents=True)
    assert main(["gc", "--cache-dir", str(project.cache)]) == 0
    assert "removed 0 results and 1 objects" in capsys.readouterr().out
    assert not stray.exists() and not (project.cache / "tmp").exists()
    code, report = project.build()
    assert statuses(report) == {"check": "cached", "simplify": "cached", "engine": "cached"}


def test_noop_build_imports_no_heavy_library(project):
    hour_ago = time.time() - 3600
    os.utime(project.model, (hour_ago, hour_ago))  # an edit this recent is re-read on purpose (racy stat)
    project.build()
    script = (
        "import sys; from trtbuild.commands.cli import main\n"
        f"code = main(['build', {str(project.recipe)!r}, '--cache-dir', {str(project.cache)!r}, '--quiet'])\n"
        "heavy = sorted(m for m in ('torch', 'tensorflow', 'tensorrt', 'tensorrt_rtx', 'onnxruntime', 'onnx')"
        " if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 []"


def test_interrupt_while_another_run_holds_a_step_stops_promptly(tmp_path):
    from trtbuild.store.cache import Cache

    recipe, cache = _example(tmp_path), tmp_path / "cache"
    subprocess.run([sys.executable, "-m", "trtbuild", str(recipe), "--cache-dir", str(cache), "-n",
                    "--report", str(tmp_path / "dry.json")], check=True, capture_output=True, cwd=REPO)
    check_key = json.loads((tmp_path / "dry.json").read_text())["steps"][0]["key"]
    with Cache(cache).step_lock(check_key):  # "another run" is building the check step
        proc = _spawn_build(recipe, cache, tmp_path / "r.json")
        time.sleep(3)
        # SIGTERM takes the same path as Ctrl-C; SIGINT itself is ignored by processes started in
        # the background, as CI may start this suite.
        proc.send_signal(signal.SIGTERM)
        started = time.time()
        output = proc.communicate(timeout=30)[0].decode()
        assert time.time() - started < 5, "the run kept waiting for the other run's lock"
    assert proc.returncode == 130
    assert "another trtbuild run is building it" in output and "interrupted" in output


def test_a_module_in_the_current_directory_shadows_nothing(project, monkeypatch):
    (project.root / "onnx.py").write_text("raise ImportError('the wrong onnx')\n")
    (project.root / "numpy").mkdir()
    (project.root / "numpy" / "__init__.py").write_text("raise ImportError('the wrong numpy')\n")
    monkeypatch.chdir(project.root)
    code, report = project.build()
    assert code == 0, report
    assert statuses(report) == {"check": "built", "simplify": "built", "engine": "built"}
