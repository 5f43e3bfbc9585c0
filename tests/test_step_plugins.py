"""A step kind added as one module: docs/reference/examples/trtbuild_step_op_summary.py, found by its name
on PYTHONPATH when a recipe's `steps` asks for it. It plans itself after simplify, builds, caches, shows in
`dag`, `status` and `env`, takes --force and `repro` (whose script writes the same output), and its own
params model reports a recipe's mistakes at their line; the other steps' keys do not move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

EXAMPLES = REPO / "docs" / "reference" / "examples"
ENV = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), str(EXAMPLES)])}


def cli(project, *args: str) -> subprocess.CompletedProcess:
    """The command line in a process of its own, which finds the plug-in on PYTHONPATH (as its workers do)."""
    return subprocess.run([sys.executable, "-m", "trtbuild", *args, "--cache-dir", str(project.cache)], env=ENV,
                          cwd=project.root, capture_output=True, text=True, timeout=300)


def build(project, *args: str) -> tuple[int, dict]:
    report = project.root / "report.json"
    report.unlink(missing_ok=True)
    done = cli(project, str(project.recipe), "--report", str(report), *args)
    return done.returncode, json.loads(report.read_text())


def with_summary(project, top=2) -> dict:
    data = yaml.safe_load(project.recipe.read_text())
    data["steps"] = {"op_summary": {"top": top}}
    project.write_recipe(data)
    return data


def by_step(report: dict) -> dict[str, dict]:
    return {s["step"]: s for s in report["steps"] if s["step"] != "verify"}


def test_a_plugin_step_builds_after_simplify_and_moves_no_other_key(project):
    code, before = build(project)
    assert code == 0 and "op_summary" not in by_step(before)
    with_summary(project, top=2)
    code, report = build(project)
    assert code == 0, report
    steps = by_step(report)
    assert {s: steps[s]["key"] for s in by_step(before)} == {s: e["key"] for s, e in by_step(before).items()}
    assert {s: e["status"] for s, e in steps.items()} == {"check": "cached", "simplify": "cached",
                                                          "engine": "cached", "op_summary": "built"}
    summary = steps["op_summary"]["meta"]["summary"]
    assert summary["nodes"] == steps["simplify"]["meta"]["nodes_after"] == sum(n for _, n in summary["top"])
    assert [op for op, _ in summary["top"]] == ["Conv", "Relu"]  # onnx-simplifier folded the BatchNormalization
    published = Path(steps["op_summary"]["outputs"]["ops.json"])
    assert json.loads(published.read_text()) == summary

    code, again = build(project)
    assert by_step(again)["op_summary"]["status"] == "cached"
    with_summary(project, top=1)  # its own param: only it runs again
    code, changed = build(project)
    assert {s: e["status"] for s, e in by_step(changed).items() if e["status"] != "cached"} == {"op_summary": "built"}
    assert by_step(changed)["op_summary"]["meta"]["summary"]["top"] == [["Conv", 1]]
    code, forced = build(project, "--force", "op_summary")
    assert code == 0 and by_step(forced)["op_summary"]["reason"] == "--force"


def test_dag_status_and_env_show_the_plugin_step(project):
    with_summary(project)
    assert build(project)[0] == 0
    dag = cli(project, "dag", str(project.recipe))
    assert dag.returncode == 0, dag.stderr
    nodes = {label.split("<br/>")[0]: node for node, label in
             (line.strip().split("[", 1) for line in dag.stdout.splitlines() if '["' in line)}
    summary, simplify = nodes['"conv/op_summary'], nodes['"conv/simplify']
    assert f"  {simplify} --> {summary}" in dag.stdout.splitlines()
    status = cli(project, "status", str(project.recipe), "--steps")
    assert status.returncode == 0 and "fresh    conv/op_summary" in status.stdout
    env = subprocess.run([sys.executable, "-m", "trtbuild", "env"], env=ENV, capture_output=True, text=True, timeout=120)
    assert env.returncode == 0 and "plug-ins: op_summary (trtbuild_step_op_summary)" in env.stdout


def test_the_repro_of_a_plugin_step_writes_its_output_again(project, tmp_path):
    with_summary(project, top=3)
    code, report = build(project)
    published = Path(by_step(report)["op_summary"]["outputs"]["ops.json"])
    done = cli(project, "repro", str(project.recipe), "op_summary")
    assert done.returncode == 0, done.stderr
    script = Path(done.stdout.strip())
    alone = tmp_path / "alone"
    alone.mkdir()
    ran = subprocess.run([sys.executable, str(script)], cwd=alone, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})  # the script finds both
    assert ran.returncode == 0, ran.stderr
    assert (alone / "ops.json").read_bytes() == published.read_bytes()


def test_a_plugin_steps_mistakes_are_reported_at_their_line(project):
    with_summary(project)
    text = project.recipe.read_text()
    line = text.splitlines().index("  op_summary:") + 1
    for wrong, message in (("tpo: 2", f"conv.yaml:{line + 1}: steps.op_summary.tpo: unknown key (did you mean 'top'?)"),
                           ("top: 0", f"conv.yaml:{line + 1}: steps.op_summary.top: Input should be greater than or "
                                      "equal to 1")):
        project.recipe.write_text(text.replace("top: 2", wrong))
        done = cli(project, str(project.recipe))
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    project.recipe.write_text(text.replace("  op_summary:", "  op_sumary:"))
    done = cli(project, str(project.recipe))
    assert done.returncode == 2 and f"conv.yaml:{line}: steps.op_sumary: no step kind 'op_sumary'" in done.stderr
    assert "did you mean 'op_summary'?" in done.stderr
    project.recipe.write_text(text.replace("  op_summary:", "  simplify:"))
    done = cli(project, str(project.recipe))
    assert done.returncode == 2 and f"conv.yaml:{line}: steps.simplify: a built-in step kind" in done.stderr
    done = cli(project, "repro", str(project.recipe), "op_sumary")
    assert done.returncode == 2 and "'op_sumary': no such step kind" in done.stderr


GATE = '''"""Passes: a gate, which every engine waits for."""
import json

from trtbuild.steps import Reads

NAME = "always_passes"
MAIN_OUTPUT = "passed.json"
READS = Reads(params=(), files=("model",))
AFTER = ("check",)
BEFORE = ("engine",)
GATE = True


def tools(params):
    return ()


def plan(p, params):
    return p.step(NAME, {}, {"model": p.model}, after=[p.first("check")])


def run(job):
    (job.outdir / MAIN_OUTPUT).write_text(json.dumps(True))
    return {}
'''


def test_a_kind_registered_by_one_line_is_planned_where_it_declares(project, tmp_path, monkeypatch):
    from trtbuild.planning.graph import compile_recipe, kind_order
    from trtbuild.recipes.loader import load_recipe
    from trtbuild.steps import PLUGINS, register_kind
    from trtbuild.store.cache import Cache

    (tmp_path / "gate_kind.py").write_text(GATE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("trtbuild.steps.PLUGINS", dict(PLUGINS))
    register_kind("always_passes", "gate_kind")
    data = yaml.safe_load(project.recipe.read_text())
    plain = compile_recipe(load_recipe(project.recipe), Cache(project.cache))
    project.write_recipe(data | {"steps": {"always_passes": None}})
    steps = compile_recipe(load_recipe(project.recipe), Cache(project.cache))
    kind_order.cache_clear()
    names = [s.name for s in steps]
    assert names == ["check", "simplify", "always_passes", "engine", "verify"]
    gate, engine = steps[2], steps[3]
    assert gate in engine.after and [d.name for d in gate.deps] == ["simplify", "check"]  # the model as it stands
    assert [(s.id, s.params) for s in plain] == [(s.id, s.params) for s in steps if s is not gate]
