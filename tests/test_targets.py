"""GPU targets: several engines per recipe sharing the ONNX steps, targets this machine cannot build,
and the reports a nightly CI job reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO, conv_model, full_tensorrt, recipe_dict
from trtbuild.backends import target
from trtbuild.commands.cli import main


def engines(report: dict) -> dict[str, str]:
    return {s["target"]: s["status"] for s in report["steps"] if s["step"] == "engine"}


def test_two_rtx_targets_share_onnx_and_a_third_builds_alone(project):
    data = recipe_dict("conv.onnx")
    data["targets"] = ["tensorrt-rtx", "tensorrt-rtx:sm86+sm120"]
    project.write_recipe(data)
    code, report = project.build()
    assert code == 0
    built = engines(report)
    assert sorted(t.rsplit("-", 1)[1] for t in built) == ["portable", "sm86+sm120"]
    assert set(built.values()) == {"built"}
    assert [s["step"] for s in report["steps"]].count("simplify") == 1  # one ONNX pipeline for all targets
    plans = {s["outputs"]["model.plan"] for s in report["steps"] if s["step"] == "engine"}
    assert len(plans) == 2

    data["targets"].append("tensorrt-rtx:sm89")
    project.write_recipe(data)
    code, report = project.build()
    assert code == 0
    statuses = {s["step"] + "@" + (s["target"] or "").rsplit("-", 1)[-1]: s["status"] for s in report["steps"]}
    assert statuses["check@"] == statuses["simplify@"] == "cached"
    assert statuses["engine@portable"] == statuses["engine@sm86+sm120"] == "cached"
    assert statuses["engine@sm89"] == "built"


def test_tensorrt_targets_without_their_gpu_are_reported_not_built(project, capsys):
    data = recipe_dict("conv.onnx")
    data["targets"] = ["tensorrt:sm86", "tensorrt:sm90", "tensorrt-rtx"]  # a recipe's targets for other hosts
    project.write_recipe(data)
    code, report = project.build()
    assert code == 0
    skipped = {s["target"]: s["reason"] for s in report["steps"] if s["step"] == "engine" and s["status"] == "skipped"}
    assert len(skipped) == 2
    for arch, reason in zip(("sm86", "sm90"), sorted(skipped.values())):
        assert f"needs TensorRT and a GPU with sm_{arch[2:]}" in reason or f"needs a GPU with sm_{arch[2:]}" in reason
    assert list(engines(report).values()).count("built") == 1
    err = capsys.readouterr().err
    assert "2 target(s) left to other machines: tensorrt:sm86: needs " in err and "tensorrt:sm90: needs " in err
    assert main(["status", str(project.recipe), "--cache-dir", str(project.cache), "--json",
                 "--target", "tensorrt:sm86", "--target", "tensorrt-rtx"]) == 0
    cells = json.loads(capsys.readouterr().out)["matrix"]["conv"]
    assert sorted(c["state"] for c in cells.values()) == ["fresh", "skipped"]


def test_bad_target_spec_is_a_usage_error(project, capsys):
    code = main(["build", str(project.recipe), "--cache-dir", str(project.cache), "--target", "tensorrt-rtx:sm70"])
    assert code == 2
    assert "TensorRT-RTX cannot build for compute capability 7.0" in capsys.readouterr().err
    data = recipe_dict("conv.onnx")
    data["targets"] = ["cuda:sm86"]
    project.write_recipe(data)
    assert main(["build", str(project.recipe), "--cache-dir", str(project.cache)]) == 2
    assert f"{project.recipe}:{next(i for i, l in enumerate(project.recipe.read_text().splitlines(), 1) if 'cuda' in l)}: " \
        "targets[0]: unknown backend 'cuda': the backends are tensorrt, tensorrt-rtx" in capsys.readouterr().err


def test_directory_with_a_broken_recipe_builds_the_rest_and_reports_it(project, capsys):
    import onnx

    onnx.save(conv_model(extra_op="Det"), project.root / "broken.onnx")
    broken = recipe_dict("broken.onnx")
    broken["name"], broken["onnx"]["simplify"] = "broken", False
    (project.root / "broken.yaml").write_text(json.dumps(broken))
    junit, summary = project.root / "junit.xml", project.root / "summary.md"
    code = main(["build", str(project.root), "--cache-dir", str(project.cache),
                 "--junit", str(junit), "--markdown", str(summary)])
    assert code == 1
    suites = {s.get("name"): s for s in ET.parse(junit).getroot()}
    assert suites["conv"].get("failures") == "0" and suites["broken"].get("failures") == "1"
    failure = suites["broken"].find("testcase/failure")
    assert "node 'det_node' (Det)" in failure.text
    assert suites["conv"].get("skipped") == "1"  # verify: no GPU here
    text = summary.read_text()
    assert text.startswith("## trtbuild: FAILED")
    assert "| broken | engine |" in text and "**failed**" in text and "node 'det_node' (Det)" in text
    assert main(["status", str(project.root), "--cache-dir", str(project.cache)]) == 1
    out = capsys.readouterr().out
    assert "broken" in out and "failed" in out and "last attempt failed" in out


def _installed_tensorrt(site: Path) -> str:
    """installed_version("tensorrt") in a fresh interpreter that also sees `site`."""
    probe = "from trtbuild.backends.target import installed_version; print(installed_version('tensorrt'))"
    env = os.environ | {"PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_tensorrt_found_under_another_distribution_name(tmp_path):
    # Full TensorRT cannot be installed here: a package laid out as the tensorrt-cu12 wheel lays it out.
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text("raise ImportError('never imported')\n")
    info = tmp_path / "tensorrt_cu12-10.13.3.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorrt-cu12\nVersion: 10.13.3.9\n")
    (info / "top_level.txt").write_text("tensorrt\n")
    assert _installed_tensorrt(tmp_path) == "10.13.3.9"


def test_tensorrt_from_a_system_package_without_metadata(tmp_path):
    # JetPack's python3-libnvinfer: the module and nothing else; its version is read, not imported.
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text('__version__ = "10.3.0"\nraise ImportError("never imported")\n')
    assert _installed_tensorrt(tmp_path) == "10.3.0"


def test_a_target_asked_for_on_the_command_line_and_not_built_fails(project, capsys):
    code, report = project.build("--target", "tensorrt:sm86", "--target", "tensorrt-rtx")
    assert code == 1 and not report["ok"]
    err = capsys.readouterr().err
    assert "conv/engine [tensorrt" in err and "sm86" in err and "]: asked for with --target and cannot be built here" in err
    assert list(engines(report).values()).count("built") == 1


def test_full_tensorrt_plans_are_for_every_gpu_of_the_sm_when_tensorrt_offers_it(tmp_path, monkeypatch, request):
    full_tensorrt(tmp_path, b"NONE\0AMPERE_PLUS\0SAME_COMPUTE_CAPABILITY\0", monkeypatch, request, "NVIDIA A10", "8.6")
    found, cannot = target.resolve_target("tensorrt")
    assert cannot is None
    assert found.id == "tensorrt-10.13.3.9-sm86" and found.gpu_model == ""


def test_full_tensorrt_plans_name_the_gpu_model_when_tensorrt_cannot_share_them(tmp_path, monkeypatch, request):
    full_tensorrt(tmp_path, b"NONE\0AMPERE_PLUS\0", monkeypatch, request, "NVIDIA GeForce RTX 3090", "8.6")
    found, cannot = target.resolve_target("tensorrt:sm86")
    assert cannot is None
    assert found.id == "tensorrt-10.13.3.9-sm86-geforce-rtx-3090"
    assert target.target_from_dict(found.to_dict()) == found  # what the engine step receives


def test_a_target_never_built_says_so_and_only_what_else_changed(project):
    assert project.build("--target", "tensorrt-rtx:sm86")[0] == 0
    code, report = project.build("--target", "tensorrt-rtx:sm89+sm120", "--dry-run")
    reasons = {s["step"]: s["reason"] for s in report["steps"]}
    assert reasons["engine"] == "never built for this target"  # not a change of compute capabilities
    data = recipe_dict("conv.onnx", workspace="512MiB")
    project.write_recipe(data)
    code, report = project.build("--target", "tensorrt-rtx:sm89+sm120", "--dry-run")
    reason = {s["step"]: s["reason"] for s in report["steps"]}["engine"]
    assert reason.startswith("never built for this target; since the tensorrt-rtx-") and "-sm86 build: " in reason
    assert "params.workspace: 268435456 -> 536870912" in reason and "params.target" not in reason


def test_status_heads_a_target_this_machine_cannot_resolve_by_what_it_is(project, capsys):
    if target.installed_version("tensorrt"):
        pytest.skip("full TensorRT is installed here")
    assert main(["status", str(project.recipe), "--cache-dir", str(project.cache),
                 "--target", "tensorrt", "--target", "tensorrt:sm90"]) == 1  # nothing built yet
    header = capsys.readouterr().out.splitlines()[0]
    no_gpu = "tensorrt (not installed, no GPU)" if not target.detect_gpus() else "tensorrt (not installed)"
    assert no_gpu in header and "tensorrt:sm90 (not installed)" in header
    assert "none" not in header and "smlocal" not in header
