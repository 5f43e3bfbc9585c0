"""One registration line from Python (steps.register_kind, frontends.registry.register) reaches the worker
processes that run the steps: a kind or framework module with a name of its own (not trtbuild_step_NAME /
trtbuild_framework_NAME) builds end to end through trtbuild.api, its declared environment variables reach
it, and a plug-in's code edited after its key was taken is refused by the worker, as trtbuild's own is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

STAMP = '''"""stamp: the simplified model's node count, a label and $STAMP_VALUE, as stamp.json."""

import json
from pathlib import Path
import os

from pydantic import BaseModel

from trtbuild.steps import Job, Reads

NAME = "stamp"
MAIN_OUTPUT = "stamp.json"
READS = Reads(params=("label",), files=("model",), env=("STAMP_VALUE",))
AFTER = ("simplify",)


class PARAMS(BaseModel):
    label: str = "-"


def tools(params):
    return ("onnx",)


def plan(p, params):
    return p.step(NAME, {"label": params.label}, {"model": p.model_after("simplify")})


def run(job: Job) -> dict:
    import onnx

    model = onnx.load(str(job.inputs["model"]), load_external_data=False)
    stamp = {"label": job.params["label"], "value": os.environ.get("STAMP_VALUE"), "nodes": len(model.graph.node)}
    (job.outdir / MAIN_OUTPUT).write_text(json.dumps(stamp))
    return stamp
'''

MLP = '''"""A one-layer perceptron whose weights are a .npz (w, b), run by numpy."""


def load(spec):
    import numpy as np

    with np.load(spec.path) as npz:
        return {k: npz[k] for k in ("w", "b")}


def export(model, spec, out_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    (name, info), = spec.inputs.items()
    nodes = [helper.make_node("MatMul", [name, "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
    dims = ["batch" if d == -1 else d for d in info["shape"]]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], model["w"].shape[1]])],
                              [numpy_helper.from_array(v, k) for k, v in model.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", spec.opset)], ir_version=9), out_path)
    return {"exporter": "mlp"}


def predict(model, spec, feeds):
    (x,) = feeds.values()
    return [x @ model["w"] + model["b"]]
'''


@pytest.fixture
def registered(project, tmp_path, monkeypatch):
    """The two plug-in modules on this process's path (the workers' path is the runner's), registered by one
    line each, and nothing of them left registered afterwards."""
    from trtbuild.frontends import registry
    from trtbuild.steps import PLUGINS, register_kind

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "stamp_kind.py").write_text(STAMP)
    (plugins / "my_mlp.py").write_text(MLP)
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setattr("trtbuild.steps.PLUGINS", dict(PLUGINS))
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    register_kind("stamp", "stamp_kind")
    registry.register(registry.Framework("my-mlp", "my_mlp", requirements=("numpy",), tools=("numpy", "onnx"),
                                         default_opset=17, input_dtype="float32"))
    return plugins


def by_step(outcome) -> dict:
    return {r.step.name: r for r in outcome.results}


def test_a_registered_kind_runs_in_the_worker_with_its_declared_environment(project, registered, monkeypatch, capsys):
    from trtbuild import api

    data = yaml.safe_load(project.recipe.read_text())
    project.write_recipe(data | {"steps": {"stamp": {"label": "first"}}})
    monkeypatch.setenv("STAMP_VALUE", "one")
    outcome = api.build([project.recipe], cache_dir=project.cache)
    assert outcome.exit_code == 0, outcome.failures
    stamp = by_step(outcome)["stamp"]
    assert stamp.status == "built"
    assert json.loads(Path(stamp.outputs["stamp.json"]).read_text())["value"] == "one"

    monkeypatch.setenv("STAMP_VALUE", "two")  # a declared variable: in the key, and it reaches the step
    again = by_step(api.build([project.recipe], cache_dir=project.cache))
    assert again["stamp"].status == "built" and again["engine"].status == "cached"
    assert json.loads(Path(again["stamp"].outputs["stamp.json"]).read_text())["value"] == "two"

    # its repro script, run by a fresh interpreter with no PYTHONPATH, finds and registers the kind itself
    from trtbuild.commands.cli import main

    capsys.readouterr()
    assert main(["repro", str(project.recipe), "stamp", "--cache-dir", str(project.cache)]) == 0
    script = Path(capsys.readouterr().out.strip().splitlines()[-1])
    alone = project.root / "alone"
    alone.mkdir()
    ran = subprocess.run([sys.executable, str(script)], cwd=alone, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert ran.returncode == 0, ran.stderr
    assert json.loads((alone / "stamp.json").read_text())["value"] == "two"


def test_a_registered_framework_exports_checks_and_builds_a_plan(project, registered):
    from trtbuild import api

    rng = np.random.default_rng(0)
    np.savez(project.root / "mlp.npz", w=rng.standard_normal((8, 4)).astype(np.float32),
             b=rng.standard_normal(4).astype(np.float32))
    recipe = project.root / "mlp.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "mlp", "source": {"framework": "my-mlp", "path": "mlp.npz", "outputs": ["y"]},
        "inputs": {"x": {"shape": [-1, 8], "min": [1, 8], "opt": [2, 8], "max": [4, 8]}},
        "engine": {"backend": "tensorrt-rtx", "workspace": "256MiB", "optimization_level": 0}}))
    outcome = api.build([recipe], cache_dir=project.cache)
    assert outcome.exit_code == 0, outcome.failures
    steps = by_step(outcome)
    assert steps["export"].status == "built" and steps["parity"].status == "built"
    assert Path(steps["engine"].outputs["model.plan"]).stat().st_size > 0


def test_a_plugin_kind_edited_after_its_key_was_taken_is_refused_by_the_worker(project, registered, tmp_path):
    from helpers import run_in_a_worker
    from trtbuild.execution.registered import registered as names_registered
    from trtbuild.steps.action import code_version, expectations

    expect = expectations("stamp", {"version": code_version("stamp"), "tools": {}})
    assert expect["code"]["stamp_kind"] is not None  # the plug-in's bytes are in what the worker checks
    (registered / "stamp_kind.py").write_text(STAMP.replace('"nodes": len(model.graph.node)', '"nodes": 0'))
    (tmp_path / "out").mkdir()
    job = {"kind": "stamp", "params": {"label": "x"}, "inputs": {"model": str(project.model)},
           "outdir": str(tmp_path / "out"), "context": {}, "env": {}, "expect": expect, "registered": names_registered()}
    result = run_in_a_worker(job, tmp_path / "log")
    assert not result["ok"]
    assert "trtbuild's code of the stamp step (stamp_kind)" in result["error"]
    assert not list((tmp_path / "out").iterdir())
