"""A framework is one module with one descriptor: a toy framework, written here as one file found by its name
(trtbuild_framework_numpy_mlp on Python's path), exports a two-layer perceptron whose weights are a .npz, runs
it with numpy for parity, and builds a real TensorRT-RTX plan through the command line; `dag`, `status`, `env`
and the recipe's choices know it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO

TOY = '''"""numpy-mlp: a two-layer perceptron whose weights are a .npz (w1, b1, w2, b2), run by numpy."""

from trtbuild.frontends.registry import Framework

FRAMEWORK = Framework("numpy-mlp", __name__, requirements=("numpy", "onnx"), tools=("numpy", "onnx"),
                      default_opset=17, env=("NUMPY_MLP_",), input_dtype="float32")


def load(spec):
    import numpy as np

    with np.load(spec.path) as npz:
        return {k: npz[k] for k in ("w1", "b1", "w2", "b2")}


def export(model, spec, out_path):
    import os

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    (name, info), = spec.inputs.items()
    output = (spec.outputs or ["y"])[0]
    scale = float(os.environ.get("NUMPY_MLP_SCALE", "1"))  # a keyed variable: its prefix is in FRAMEWORK.env
    weights = {k: numpy_helper.from_array(v * (scale if k == "w2" else 1), k) for k, v in model.items()}
    nodes = [helper.make_node("MatMul", [name, "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["y0"]),
             helper.make_node("Add", ["y0", "b2"], [output])]
    dims = ["batch" if d == -1 else d for d in info["shape"]]
    graph = helper.make_graph(nodes, "numpy_mlp", [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [dims[0], model["w2"].shape[1]])],
                              list(weights.values()))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", spec.opset)], ir_version=9), out_path)
    return {"exporter": "numpy-mlp"}


def predict(model, spec, feeds):
    import numpy as np

    (x,) = feeds.values()
    return [np.maximum(x @ model["w1"] + model["b1"], 0) @ model["w2"] + model["b2"]]
'''

RECIPE = {
    "name": "mlp",
    "source": {"framework": "numpy-mlp", "path": "mlp.npz", "outputs": ["y"]},
    "inputs": {"x": {"shape": [-1, 8], "min": [1, 8], "opt": [4, 8], "max": [16, 8]}},
    "engine": {"backend": "tensorrt-rtx", "workspace": "256MiB", "optimization_level": 0},
}


def cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The real CLI in a process whose path holds the toy framework's folder (its workers inherit the path)."""
    path = os.pathsep.join([str(root / "plugins"), str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "trtbuild", *args], cwd=root, env=os.environ | env | {"PYTHONPATH": path},
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """The toy framework, its weights and a recipe, built once."""
    root = tmp_path_factory.mktemp("toy-framework")
    (root / "plugins").mkdir()
    (root / "plugins" / "trtbuild_framework_numpy_mlp.py").write_text(TOY)
    rng = np.random.default_rng(0)
    np.savez(root / "mlp.npz", w1=rng.standard_normal((8, 16), np.float32), b1=rng.standard_normal(16, np.float32),
             w2=rng.standard_normal((16, 3), np.float32), b2=rng.standard_normal(3, np.float32))
    (root / "mlp.yaml").write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    run = cli(root, "mlp.yaml", "--cache-dir", "cache", "--report", "report.json")
    assert run.returncode == 0, run.stderr
    return root


def steps_of(report: Path) -> dict[str, dict]:
    return {s["step"]: s for s in json.loads(report.read_text())["steps"]}


@pytest.mark.slow
def test_a_toy_framework_in_one_module_exports_checks_and_builds_a_real_plan(toy):
    steps = steps_of(toy / "report.json")
    assert {k: s["status"] for k, s in steps.items()} == {
        "export": "built", "check": "built", "parity": "built", "simplify": "built", "engine": "built",
        "verify": "skipped"}
    assert steps["export"]["meta"]["exporter"] == "numpy-mlp"
    plan = Path(steps["engine"]["outputs"]["model.plan"])
    assert plan.stat().st_size > 0 and steps["engine"]["meta"]["backend"] == "tensorrt-rtx"

    # The descriptor's default opset and tools are the export's: they are in its key.
    import onnx

    exported = onnx.load(steps["export"]["outputs"]["model.onnx"])
    assert [o.version for o in exported.opset_import] == [17]
    assert [o.name for o in exported.graph.output] == ["y"]

    # Nothing changed: nothing runs; the descriptor's environment prefix is keyed: a new value reruns the export.
    run = cli(toy, "mlp.yaml", "--cache-dir", "cache", "--report", "again.json")
    assert run.returncode == 0, run.stderr
    assert {s["status"] for k, s in steps_of(toy / "again.json").items() if k != "verify"} == {"cached"}
    run = cli(toy, "mlp.yaml", "--cache-dir", "cache", "--dry-run", NUMPY_MLP_SCALE="2")
    assert run.returncode == 0, run.stderr
    export_line = next(line for line in run.stderr.splitlines() if "mlp/export" in line)
    assert "would-run" in export_line and "NUMPY_MLP_SCALE" in export_line
    run = cli(toy, "mlp.yaml", "--cache-dir", "cache", NUMPY_MLP_SCALE="2")  # it reaches the exporter, not predict
    assert run.returncode == 1 and "mlp/parity: ONNX Runtime disagrees with numpy-mlp" in run.stderr

    # The framework's own module is read while the export runs: a new version of it reruns the export.
    if steps["export"]["meta"]["reads_observed"].startswith("system calls"):
        module = toy / "plugins" / "trtbuild_framework_numpy_mlp.py"
        module.write_text(TOY.replace('{"exporter": "numpy-mlp"}', '{"exporter": "numpy-mlp", "version": 2}'))
        try:
            run = cli(toy, "mlp.yaml", "--cache-dir", "cache", "--dry-run")
        finally:
            module.write_text(TOY)
        export_line = next(line for line in run.stderr.splitlines() if "mlp/export" in line)
        assert "would-run" in export_line and "plugins/trtbuild_framework_numpy_mlp.py changed" in export_line


@pytest.mark.slow
def test_dag_status_and_env_know_the_toy_framework(toy):
    run = cli(toy, "status", "mlp.yaml", "--cache-dir", "cache")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "mlp" in run.stdout and "fresh" in run.stdout

    run = cli(toy, "dag", "mlp.yaml", "--cache-dir", "cache")
    assert run.returncode == 0, run.stderr
    for step in ("mlp/export", "mlp/parity", "mlp/engine"):
        assert step in run.stdout

    run = cli(toy, "env")
    assert run.returncode == 0, run.stderr
    frameworks = run.stdout.split("Frameworks:")[1].split("Tools:")[0]
    assert f"numpy-mlp      numpy {np.__version__}" in frameworks


@pytest.mark.slow
def test_the_recipe_choices_list_the_toy_framework(toy):
    recipe = RECIPE | {"source": RECIPE["source"] | {"framework": "numpy-mpl"}}
    (toy / "typo.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    run = cli(toy, "typo.yaml", "--cache-dir", "cache")
    assert run.returncode == 2
    line = next(i for i, text in enumerate((toy / "typo.yaml").read_text().splitlines(), 1) if "numpy-mpl" in text)
    assert (f"typo.yaml:{line}: source.framework: unknown framework 'numpy-mpl': the frameworks are onnx, pytorch, "
            "tensorflow, keras, numpy-mlp") in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_the_toy_frameworks_repro_script_reproduces_its_export(toy):
    run = cli(toy, "repro", "mlp.yaml", "export", "--cache-dir", "cache")
    assert run.returncode == 0, run.stderr
    script = Path(run.stdout.strip())
    done = subprocess.run([sys.executable, str(script)], cwd=script.parent, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONPATH": str(toy / "plugins")})
    assert done.returncode == 0, done.stderr
    import onnx

    built = steps_of(toy / "report.json")["export"]["outputs"]["model.onnx"]
    assert onnx.load(script.parent / "model.onnx").graph == onnx.load(built).graph


def test_one_register_line_makes_a_framework_a_choice_whose_descriptor_plans_the_export(tmp_path, monkeypatch):
    from trtbuild import api
    from trtbuild.frontends import registry

    np.savez(tmp_path / "mlp.npz", w1=np.zeros((8, 3), np.float32))
    (tmp_path / "mlp.yaml").write_text(yaml.safe_dump(RECIPE | {"source": RECIPE["source"] | {"framework": "mlp2"}}))
    with pytest.raises(api.RecipeError, match=r"mlp.yaml:\d+: source.framework: unknown framework 'mlp2': the "
                       "frameworks are onnx, pytorch, tensorflow, keras"):
        api.load(tmp_path / "mlp.yaml")

    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))  # this test's registration only
    registry.register(registry.Framework("mlp2", "mlp2_module", tools=("numpy", "onnx", "scipy"), default_opset=13,
                                         input_dtype="float16", env=("MLP2_",)))
    steps = {s.kind.NAME: s for s in api.plan([tmp_path / "mlp.yaml"], tmp_path / "cache")}
    export = steps["export"]
    assert (export.params["framework"], export.params["opset"]) == ("mlp2", 13)
    assert export.params["inputs"]["x"]["dtype"] == "float16"
    assert export.kind.tools(export.params) == ("numpy", "onnx", "scipy", "onnxruntime")  # + the runs at each shape
    assert export.kind.env(export.params) == ("MLP2_",) and export.kind.preload(export.params) == ("onnxruntime",)
    assert "parity" in steps and "engine" in steps


def test_the_architecture_page_shows_the_tested_toy():
    """The page's example is this test's module, but for the body of export."""
    page = (REPO / "docs" / "reference" / "architecture.md").read_text().split("## Frameworks")[1]
    shown = page.split("```python\n")[1].split("```")[0]
    head, tail = shown.split("def export(model, spec, out_path):\n")
    assert TOY.startswith(head) and TOY.endswith(tail.split('    return {"exporter": "numpy-mlp"}\n')[1])
    assert '    return {"exporter": "numpy-mlp"}\n' in TOY
    recipe = yaml.safe_load(page.split("```yaml\n")[1].split("```")[0])
    assert recipe == {k: RECIPE[k] for k in ("name", "source", "inputs")}


def test_the_built_in_descriptors_keep_the_export_keys_components():
    """What export keys held before frameworks were descriptors: the same tools, preloads and variables."""
    from trtbuild.steps import export

    params = {"exporter": None, "package": None, "ranges": None}
    found = {fw: (export.tools(params | {"framework": fw}), export.preload(params | {"framework": fw}),
                  export.env(params | {"framework": fw})) for fw in ("pytorch", "tensorflow", "keras")}
    assert found == {
        "pytorch": (("torch", "onnx", "numpy"), ("torch", "torch.onnx"), ("TORCH_", "PYTORCH_")),
        "tensorflow": (("tensorflow", "tensorflow-cpu", "tf2onnx", "onnx", "numpy", "protobuf"), ("tensorflow", "tf2onnx"),
                       ("TF_",)),
        "keras": (("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "numpy", "protobuf"), ("keras", "tf2onnx"),
                  ("KERAS_BACKEND", "TF_", "TORCH_", "PYTORCH_"))}
    assert set(export.READS.env) == {"KERAS_BACKEND", "TF_", "TORCH_", "PYTORCH_"}


def test_a_framework_older_than_trtbuild_supports_is_said_by_env_and_by_each_build(project, monkeypatch, capsys):
    """The GPU image's torch below trtbuild's floor, say: `trtbuild env` and every build that exports with it say so
    (the build goes on: most models still export)."""
    import numpy

    from trtbuild.commands.cli import main
    from trtbuild.frontends import registry

    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    registry.register(registry.Framework("aged", "trtbuild_framework_aged", oldest=(("numpy", "999.1"), ("onnx", "1.0"))))
    said = (f"aged: numpy {numpy.__version__} is older than trtbuild supports (numpy >= 999.1); its exports may fail "
            "or differ: pip install 'numpy>=999.1'")
    assert registry.framework("aged").too_old() == [said]
    assert registry.framework("pytorch").too_old() == []  # the pinned torch is supported
    (project.root / "weights.npz").write_bytes(b"")
    project.write_recipe({"name": "aged", "source": {"framework": "aged", "path": "weights.npz"},
                          "inputs": {"x": {"shape": [1, 8]}}, "engine": {"backend": "tensorrt-rtx"}})
    assert main(["build", str(project.recipe), "--cache-dir", str(project.cache), "--dry-run"]) == 0
    assert said in capsys.readouterr().err
    assert main(["env"]) == 0
    assert "numpy >= 999.1" in capsys.readouterr().out
