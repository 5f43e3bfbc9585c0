"""Shared fixtures: small real ONNX models, recipe files, and the CLI run in-process."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from scheduling import pytest_collection_modifyitems  # noqa: F401  (the longest tests start first)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes" / "models"))
# The suite assumes no machine: no GPU is visible to it or the processes it starts, as on a CPU-only
# runner, whatever this host has. Tests that need GPUs simulate NVML's answer (test_gpus.py).
os.environ["CUDA_VISIBLE_DEVICES"] = ""


def conv_model(seed: int = 0, channels: int = 8, extra_op: str | None = None) -> onnx.ModelProto:
    """x[N,3,16,16] -> Conv -> BatchNorm -> Relu (-> extra_op) -> y; seeded random weights."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w"),
        *(numpy_helper.from_array(rng.uniform(0.5, 1.5, channels).astype(np.float32), n) for n in ("s", "b", "m", "v")),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], name="bn1"),
        helper.make_node("Relu", ["n"], ["r"], name="relu1"),
    ]
    out_shape = ["N", channels, 16, 16]
    if extra_op == "Det":  # a standard ONNX op that TensorRT has no importer for
        nodes.append(helper.make_node("Det", ["r"], ["y"], name="det_node"))
        out_shape = ["N", channels]
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["y"], name="out"))
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def recipe_dict(model_path: str, **engine) -> dict:
    return {
        "name": "conv",
        "source": {"framework": "onnx", "path": model_path},
        "inputs": {"x": {"dtype": "float32", "shape": [-1, 3, 16, 16], "min": [1, 3, 16, 16],
                         "opt": [2, 3, 16, 16], "max": [4, 3, 16, 16]}},
        "onnx": {"opset": 17, "simplify": True},
        "engine": {"backend": "tensorrt-rtx", "workspace": "256MiB", "optimization_level": 0, **engine},
    }


class Project:
    """A recipe directory and a cache; `build()` runs the real CLI and returns (exit code, report)."""

    def __init__(self, root: Path):
        self.root = root
        self.cache = root / "cache"
        self.recipe = root / "conv.yaml"
        self.model = root / "conv.onnx"

    def write_model(self, model: onnx.ModelProto, **save_args) -> None:
        onnx.save(model, self.model, **save_args)

    def write_recipe(self, data: dict) -> None:
        self.recipe.write_text(yaml.safe_dump(data, sort_keys=False))

    def build(self, *args: str) -> tuple[int, dict]:
        from trtbuild.commands.cli import main

        report = self.root / "report.json"
        report.unlink(missing_ok=True)
        code = main(["build", str(self.recipe), "--cache-dir", str(self.cache), "--report", str(report), *args])
        return code, json.loads(report.read_text())

    @property
    def mine(self) -> Path:
        """This user's own folder of the cache (build logs, validated recipes: trtbuild.store.private)."""
        return self.cache / "users" / str(os.geteuid())

    def actions(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in (self.cache / "actions").glob("*/*.json")]


def needs(module: str) -> None:
    """Skip unless `module` is installed, without importing it here: torchvision and transformers pull
    in torch._dynamo, whose triton import crashes a process that has loaded TensorFlow (other tests)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def build_recipe(recipe: Path, *args: str) -> tuple[int, dict]:
    """The real CLI on one recipe, with a cache beside it: (exit code, JSON report)."""
    from trtbuild.commands.cli import main

    report = recipe.parent / "report.json"
    report.unlink(missing_ok=True)
    code = main([str(recipe), "--cache-dir", str(recipe.parent / "cache"), "--report", str(report), *args])
    return code, json.loads(report.read_text())


def nets_module(source: str, folder: Path, monkeypatch):
    """Yield `folder` holding nets.py with `source`, importable here too (to save models, to compare);
    for a fixture to yield from."""
    (folder / "nets.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("nets", None)


def statuses(report: dict) -> dict[str, str]:
    """Step -> status, leaving out `verify`, which needs a GPU and is skipped on these machines
    (test_verify_is_skipped_without_a_gpu checks that)."""
    return {s["step"]: s["status"] for s in report["steps"] if s["step"] != "verify"}


@pytest.fixture
def project(tmp_path) -> Project:
    p = Project(tmp_path)
    p.write_model(conv_model())
    p.write_recipe(recipe_dict("conv.onnx"))
    return p


def full_tensorrt(site: Path, bindings: bytes, monkeypatch, request, gpu_name: str, cc: str) -> None:
    """Full TensorRT cannot be installed here: a package laid out as its wheel, whose compiled bindings
    hold `bindings`, and NVML's answer on a machine with one GPU."""
    from trtbuild.backends import target
    from trtbuild.backends.gpu import Gpu

    (site / "tensorrt").mkdir()
    (site / "tensorrt" / "__init__.py").write_text('__version__ = "10.13.3.9"\n')
    (site / "tensorrt" / "tensorrt.so").write_bytes(b"\x7fELF..." + bindings + b"...")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setattr(target, "detect_gpus", lambda: (Gpu(0, gpu_name, cc, 24 * 2**30, "580.0"),))
    target.installed_version.cache_clear()
    request.addfinalizer(target.installed_version.cache_clear)  # the real answer again for later tests


@pytest.fixture
def shared():
    """A project under /tmp that other users can reach, with a setgid cache directory of group GROUP."""
    import tempfile

    from helpers import GROUP

    if os.geteuid() != 0:
        pytest.skip("running as several users needs root (to run processes as other uids)")
    closed = [d for d in Path(os.path.realpath(sys.executable)).parents if not d.stat().st_mode & 0o001]
    beyond = [str(d) for path in (Path(sys.executable).absolute(), REPO) for d in path.parents
              if not d.stat().st_mode & 0o001 and d not in closed]
    if beyond:  # a venv (or checkout) under /root: opening /root to every user is not a test's to do
        pytest.skip(f"other users cannot reach this Python or trtbuild ({', '.join(sorted(set(beyond)))} is closed to them)")
    folder = Path(tempfile.mkdtemp(prefix="trtbuild-users-", dir="/tmp"))  # pytest's tmp_path is root-only
    modes = {d: d.stat().st_mode for d in closed}
    try:
        for path, mode in modes.items():  # let other users traverse (not list) the interpreter's folders
            path.chmod(mode | 0o001)
        folder.chmod(0o755)
        project = Project(folder)
        project.write_model(conv_model())
        project.write_recipe(recipe_dict("conv.onnx"))
        project.cache.mkdir()
        os.chown(project.cache, 0, GROUP)
        project.cache.chmod(0o2775)
        yield project
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
        shutil.rmtree(folder, ignore_errors=True)


def _run_wide(tmp_path_factory) -> Path:
    """A folder all of this run's xdist workers share (their base folders' parent), or this process's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def built_once(tmp_path_factory):
    """built_once(name, make) -> a folder that make(folder) filled once for the whole run (all xdist workers,
    behind a lock): a project and the cache a first build left, for tests that start from one. Copy it
    (copy_built) before changing anything: the folder is shared."""
    from filelock import FileLock

    def get(name: str, make) -> Path:
        folder = _run_wide(tmp_path_factory) / "built-once" / name
        with FileLock(f"{folder}.lock"):
            if not (folder.parent / f"{name}.made").exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                make(folder)
                (folder.parent / f"{name}.made").touch()
        return folder
    return get


def copy_built(built: Path, into: Path) -> Path:
    """A copy of a built_once folder, links kept as they are (out/ links are relative): `into`."""
    shutil.copytree(built, into, symlinks=True, dirs_exist_ok=True)
    return into


@pytest.fixture(scope="session")
def tiny_berts(tmp_path_factory) -> Path:
    """The tiny BERT checkpoints of helpers.TINY_BERT_SEEDS, made once for the whole run (all xdist workers:
    under their shared base folder, behind a lock); helpers.save_tiny_bert copies one into a test's folder."""
    from filelock import FileLock

    from helpers import make_tiny_berts

    needs("transformers")
    folder = _run_wide(tmp_path_factory) / "tiny-berts"
    with FileLock(f"{folder}.lock"):
        if not (folder / "made").exists():
            make_tiny_berts(folder)
            (folder / "made").touch()
    return folder
