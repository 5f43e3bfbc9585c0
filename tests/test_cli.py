"""The CLI as scripts see it: results on stdout, progress on stderr, a recap of failures, --force,
`path --target` on a machine without a GPU, and `dag` output that Mermaid itself parses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, conv_model

MERMAID = REPO / "tests" / "mermaid"


def trtbuild(project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trtbuild", *args, "--cache-dir", str(project.cache)],
                          cwd=project.root, env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=300)


def test_results_go_to_stdout_and_progress_to_stderr(project):
    done = trtbuild(project, str(project.recipe))
    assert done.returncode == 0, done.stderr
    *plans, totals = done.stdout.splitlines()
    [(name, target, plan)] = [line.split("\t") for line in plans]
    assert name == "conv" and target.startswith("tensorrt-rtx-") and plan.endswith(f"{target}/model.plan")
    assert os.path.exists(plan)
    assert totals.startswith("4 steps: 3 built, 1 skipped in ")
    assert "built      conv/check" in done.stderr and "conv/check" not in done.stdout


def test_a_failure_is_recapped_at_the_end_with_its_log(project):
    project.write_model(conv_model(extra_op="Det"))  # TensorRT cannot import it
    done = trtbuild(project, str(project.recipe))
    assert done.returncode == 1
    recap = done.stderr[done.stderr.index("trtbuild: 1 failure(s), exit code 1:"):].splitlines()
    assert recap[1].startswith("  conv/check: the engine backend cannot import 1 node (Det); fix: tensorrt-rtx: ")
    assert recap[2].strip().startswith("log: ") and recap[2].strip().endswith(".log")
    name, target, outcome = done.stdout.splitlines()[0].split("\t")
    assert outcome.startswith("skipped: ")


def test_a_step_shared_by_two_recipes_runs_once_and_says_so(project):
    other = yaml.safe_load(project.recipe.read_text()) | {"name": "conv_b"}
    (project.root / "conv_b.yaml").write_text(yaml.safe_dump(other))
    done = trtbuild(project, str(project.root), "-j", "2", "--report", "report.json")
    assert done.returncode == 0, done.stderr
    checks = [s for s in json.loads((project.root / "report.json").read_text())["steps"] if s["step"] == "check"]
    assert sorted(s["status"] for s in checks) == ["built", "cached"]
    assert [s["reason"] for s in checks if s["status"] == "cached"] == ["built by another recipe of this run"]


def test_force_reruns_cached_steps(project):
    assert trtbuild(project, str(project.recipe)).returncode == 0
    report = project.root / "r.json"
    assert trtbuild(project, str(project.recipe), "--force", "engine", "--report", str(report)).returncode == 0
    steps = {s["step"]: (s["status"], s["reason"]) for s in json.loads(report.read_text())["steps"]}
    assert steps["check"][0] == steps["simplify"][0] == "cached"
    assert steps["engine"] == ("built", "--force")
    trtbuild(project, str(project.recipe), "--force", "--report", str(report))
    assert {s["status"] for s in json.loads(report.read_text())["steps"] if s["step"] != "verify"} == {"built"}


def test_bad_jobs_is_a_usage_error(project):
    done = trtbuild(project, str(project.recipe), "-j", "0")
    assert done.returncode == 2 and "'0': expected a whole number, 1 or more" in done.stderr


def test_the_ray_executor_without_ray_installed_is_a_usage_error_that_names_the_install(project, monkeypatch, capsys):
    from trtbuild.commands.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as where Ray is not installed: `import ray` fails
    assert main(["build", str(project.recipe), "--cache-dir", str(project.cache), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--executor ray needs Ray, which is not installed: pip install 'trtbuild[ray]'" in err
    assert "Traceback" not in err and not (project.cache / "actions").exists()


def test_path_with_a_target_works_without_a_gpu(project):
    assert trtbuild(project, str(project.recipe)).returncode == 0
    done = trtbuild(project, "path", "conv", "--target", "tensorrt-rtx")
    assert done.returncode == 0 and done.stdout.strip().endswith("-portable/model.plan")
    done = trtbuild(project, "path", "conv", "--target", "tensorrt:sm86")
    assert done.returncode == 1
    assert "no tensorrt:sm86 plan for 'conv'; built: tensorrt-rtx-" in done.stderr


def test_dag_is_mermaid_that_mermaid_parses(project):
    if shutil.which("node") is None or not (MERMAID / "node_modules").is_dir():
        pytest.skip("Mermaid's parser is not installed: (cd tests/mermaid && npm ci)")
    data = yaml.safe_load(project.recipe.read_text())
    data["engine"]["precision"] = "fp16"
    project.write_recipe(data)
    trtbuild(project, str(project.recipe))
    done = trtbuild(project, "dag", str(project.recipe))
    assert done.returncode == 0, done.stderr
    parsed = subprocess.run(["node", str(MERMAID / "parse.mjs")], input=done.stdout, capture_output=True, text=True,
                            cwd=MERMAID, timeout=120)
    assert parsed.returncode == 0, parsed.stderr
    steps = ("check", "simplify", "precision", "accuracy", "engine", "verify")
    # check -> simplify, precision, accuracy, engine (the gates); simplify -> precision, accuracy, verify;
    # precision -> accuracy, engine; accuracy -> engine; engine -> verify
    assert json.loads(parsed.stdout) == {"type": "flowchart-v2", "nodes": len(steps), "edges": 11}
    assert "fresh" in done.stdout
    dot = trtbuild(project, "dag", str(project.recipe), "--dot").stdout
    assert dot.startswith("digraph trtbuild {") and dot.count(" -> ") == 11
