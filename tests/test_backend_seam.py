"""A backend is one module: a toy backend, written here as one file, builds a real plan (with TensorRT-RTX
underneath), its repro script runs the engine step again with the toy's configure(), `trtbuild triton` serves its plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import yaml

from conftest import REPO
from helpers import LONG, SHORT, seq_model, seq_recipe

TOY = '''"""toy-rtx: TensorRT-RTX plans for sm_86 only, always at optimization level 0."""

NAME = "toy-rtx"
MODULE = "tensorrt_rtx"
DISTRIBUTION = "tensorrt-rtx"
INSTALL_HINT = "pip install tensorrt-rtx"
BUILDS_ON_GPU = False
TIMING_CACHE = False


def resolve(spec, caps):
    from trtbuild.backends.target import Target, installed_version
    from trtbuild.errors import UsageError

    if caps not in ((), ("8.6",)):
        raise UsageError(f"target {spec!r}: toy-rtx builds for sm86 only")
    return Target(NAME, installed_version("tensorrt-rtx"), ("8.6",)), None


def usable_gpus(target, gpus):
    return [g for g in gpus if g.compute_capability == "8.6"]


def needs(target):
    return "8.6"


def runs_on(target):
    return "sm_86 GPUs (toy)"


def configure(trt, config, target):
    # toy-rtx: one compute capability, the fastest build
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt.ComputeCapability.SM86, 0)
    config.builder_optimization_level = 0
'''


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    """The real CLI in a process whose path holds the toy backend's folder (its workers inherit the path)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "plugins"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "trtbuild", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_a_toy_backend_in_one_module_builds_reproduces_and_deploys(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "trtbuild_backend_toy_rtx.py").write_text(TOY)
    onnx.save(seq_model(), tmp_path / "seq.onnx")
    recipe = seq_recipe(short=SHORT, long=LONG) | {"targets": ["toy-rtx:sm86"]}
    (tmp_path / "seq.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))

    run = cli(tmp_path, "seq.yaml", "--cache-dir", "cache", "--report", "report.json")
    assert run.returncode == 0, run.stderr
    engine = next(s for s in json.loads((tmp_path / "report.json").read_text())["steps"] if s["step"] == "engine")
    assert engine["target"].startswith("toy-rtx-") and engine["target"].endswith("-sm86")
    assert (engine["meta"]["backend"], engine["meta"]["runs_on"], engine["meta"]["compute_capabilities"]) == (
        "toy-rtx", "sm_86 GPUs (toy)", ["8.6"])
    assert Path(engine["outputs"]["model.plan"]).stat().st_size > 0

    # The repro script runs the engine step again, through the toy's configure(), from the folder it was found in.
    run = cli(tmp_path, "repro", "seq.yaml", "engine", "--cache-dir", "cache")
    assert run.returncode == 0, run.stderr
    script = Path(run.stdout.strip())
    assert str(tmp_path / "plugins") in script.read_text()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    built = subprocess.run([sys.executable, str(script)], cwd=script.parent, capture_output=True, text=True, timeout=300,
                           env=env)
    assert built.returncode == 0, built.stderr
    assert (script.parent / "model.plan").stat().st_size > 0
    rebuilt = json.loads((script.parent / "model.json").read_text())
    assert (rebuilt["backend"], rebuilt["compute_capabilities"]) == ("toy-rtx", ["8.6"])

    # Deploying asks the backend's metadata too: Triton maps sm_86 to the toy's plan.
    run = cli(tmp_path, "triton", "seq.yaml", "--cache-dir", "cache", "--repository", "repo")
    assert run.returncode == 0, run.stderr
    config = (tmp_path / "repo" / "seq" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config  # TensorRT-RTX plans underneath: Triton's TensorRT backend cannot load them
    chosen = json.loads((tmp_path / "repo" / "seq" / "1" / "plans.json").read_text())
    assert chosen["plans"] == {"8.6": "model.sm86.plan"}  # no portable plan: other GPUs get none

    # Other compute capabilities are the backend's to refuse, at the recipe's line.
    recipe["targets"] = ["toy-rtx:sm120"]
    (tmp_path / "seq.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    run = cli(tmp_path, "seq.yaml", "--cache-dir", "cache")
    assert run.returncode == 2
    line = next(i for i, text in enumerate((tmp_path / "seq.yaml").read_text().splitlines(), 1) if "toy-rtx" in text)
    assert f"seq.yaml:{line}: targets[0]: target 'toy-rtx:sm120': toy-rtx builds for sm86 only" in run.stderr


@pytest.mark.slow
def test_the_toy_backend_is_a_choice_of_recipes_the_command_line_dag_status_and_env(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "trtbuild_backend_toy_rtx.py").write_text(TOY)
    onnx.save(seq_model(), tmp_path / "seq.onnx")
    recipe = seq_recipe(short=SHORT, long=LONG)
    recipe["engine"]["backend"] = "toy-rtx"  # no targets: the one engine.backend names
    (tmp_path / "seq.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))

    run = cli(tmp_path, "seq.yaml", "--cache-dir", "cache", "--report", "report.json")
    assert run.returncode == 0, run.stderr
    engine = next(s for s in json.loads((tmp_path / "report.json").read_text())["steps"] if s["step"] == "engine")
    assert engine["status"] == "built" and engine["meta"]["backend"] == "toy-rtx"
    assert engine["target"].startswith("toy-rtx-") and engine["target"].endswith("-sm86")

    run = cli(tmp_path, "status", "seq.yaml", "--cache-dir", "cache")
    assert run.returncode == 0, run.stdout + run.stderr
    header, row = run.stdout.splitlines()[:2]
    assert header.split()[1] == engine["target"] and row.split() == ["seq", "fresh"]

    run = cli(tmp_path, "dag", "seq.yaml", "--cache-dir", "cache")
    assert run.returncode == 0, run.stderr
    assert 'seq/engine [toy-rtx:sm86]<br/>fresh' in run.stdout

    # --backend names it too, over a recipe that asks for TensorRT-RTX
    recipe["engine"]["backend"] = "tensorrt-rtx"
    (tmp_path / "rtx.yaml").write_text(yaml.safe_dump(recipe | {"name": "rtx"}, sort_keys=False))
    run = cli(tmp_path, "rtx.yaml", "--cache-dir", "cache", "--backend", "toy-rtx", "--dry-run")
    assert run.returncode == 0, run.stderr
    engine_line = next(line for line in run.stderr.splitlines() if "rtx/engine" in line)
    assert f"rtx/engine [{engine['target']}]" in engine_line and "up to date" in engine_line  # the same model: seq's plan

    # Unknown names: the command line's and the recipe's errors list the toy beside the built-in backends.
    run = cli(tmp_path, "rtx.yaml", "--cache-dir", "cache", "--backend", "toy-rtz")
    assert run.returncode == 2
    assert "argument --backend: unknown backend 'toy-rtz': the backends are tensorrt, tensorrt-rtx, toy-rtx" in run.stderr
    recipe["engine"]["backend"] = "toy-rtz"
    (tmp_path / "rtx.yaml").write_text(yaml.safe_dump(recipe | {"name": "rtx"}, sort_keys=False))
    run = cli(tmp_path, "rtx.yaml", "--cache-dir", "cache")
    line = next(i for i, text in enumerate((tmp_path / "rtx.yaml").read_text().splitlines(), 1) if "toy-rtz" in text)
    assert run.returncode == 2
    assert (f"rtx.yaml:{line}: engine.backend: unknown backend 'toy-rtz': the backends are tensorrt, tensorrt-rtx, "
            "toy-rtx") in run.stderr

    run = cli(tmp_path, "env")
    assert run.returncode == 0, run.stderr
    backends = run.stdout.split("Backends:")[1].split("Frameworks:")[0]
    version = engine["target"].removeprefix("toy-rtx-").removesuffix("-sm86")
    assert f"toy-rtx        {version}" in backends


def test_no_module_outside_the_backends_names_a_built_in_backend():
    """Callers ask a backend what it can do (BUILDS_ON_GPU, TRITON_PLATFORM, ...) instead of comparing names:
    no string constant outside trtbuild/backends/ is a built-in backend's name or module."""
    import ast

    from trtbuild.backends import REGISTRY, backend

    names = set(REGISTRY) | {backend(n).MODULE for n in REGISTRY}
    found = [f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}"
             for path in sorted((REPO / "trtbuild").rglob("*.py")) if "backends" not in path.parts
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant) and node.value in names]
    assert names >= {"tensorrt", "tensorrt-rtx", "tensorrt_rtx"} and found == []
