"""Builders that several test modules use (no test module imports another): a sequence model with two
profiles, calibration data, a second machine's project, the docs' Mermaid blocks, Triton's config and
model, other users of a shared cache (the `shared` fixture itself is in conftest.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO, Project, conv_model, recipe_dict

DOCS = REPO / "docs"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def mermaid_blocks() -> list[tuple[str, str]]:
    return [(str(page.relative_to(REPO)), body) for page in sorted(DOCS.rglob("*.md"))
            for lang, body in FENCE.findall(page.read_text()) if lang == "mermaid"]


# Two optimization profiles of a model with a dynamic batch and sequence
SHORT = {"min": [1, 1, 8], "opt": [1, 16, 8], "max": [4, 64, 8]}
LONG = {"min": [1, 32, 8], "opt": [2, 128, 8], "max": [8, 256, 8]}


def seq_model() -> onnx.ModelProto:
    """x[N, S, 8] -> MatMul -> Relu -> y[N, S, 8]: dynamic batch and sequence."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "S", 8])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def seq_recipe(**profiles) -> dict:
    return {"name": "seq", "source": {"framework": "onnx", "path": "seq.onnx"},
            "inputs": {"x": {"shape": [-1, -1, 8]}},
            "profiles": [{"name": name, "inputs": {"x": shapes}} for name, shapes in profiles.items()],
            "engine": {"backend": "tensorrt-rtx", "optimization_level": 0}}


# Calibration data for the conv model
CAL_SHAPE = (2, 3, 16, 16)


def write_calibration(root: Path, seed: int = 0, files: int = 3) -> None:
    rng = np.random.default_rng(seed)
    (root / "calib").mkdir(exist_ok=True)
    for i in range(files):
        np.save(root / "calib" / f"batch{i}.npy", rng.standard_normal(CAL_SHAPE).astype(np.float32))


def quantized_recipe(precision: str = "int8", targets: list[str] | None = None, **options) -> dict:
    data = recipe_dict("conv.onnx", precision=precision)
    if targets:
        data["targets"] = targets
    data["precision"] = {"calibration": {"data": "calib/*.npy", "batches": 3}, **options}
    return data


def second_machine(project: Project) -> Project:
    """Same recipe and model, its own local cache."""
    other = Project(project.root / "machine-b")
    other.root.mkdir()
    other.write_model(conv_model())
    other.write_recipe(recipe_dict("conv.onnx"))
    return other


# Triton
def parse_config(text: str) -> dict:
    """config.pbtxt as a dict: with Triton's proto when installed, else a strict reading of the subset written."""
    from trtbuild.commands.triton_config import triton_model_config

    config_class = triton_model_config()
    if config_class is not None:
        from google.protobuf import json_format, text_format

        return json_format.MessageToDict(text_format.Parse(text, config_class()), preserving_proto_field_name=True)
    pytest.skip("tritonclient is not installed: pip install --no-deps tritonclient")


def load(path: Path):
    """A module from a file of the written repository (the Python-backend model.py)."""
    spec = importlib.util.spec_from_file_location(f"written_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chooser(model: Path):
    """The written model's own plan choice: compute capability -> plan file (ValueError: none runs there)."""
    plans = json.loads((model / "1" / "plans.json").read_text())
    module = load(model / "1" / "model.py")
    for file in plans["plans"].values():
        assert (model / "1" / file).is_file()
    return lambda cc: module.choose_plan(plans, cc)


# Other users of a shared cache
GROUP = 4343


def run_as(project: Project, uid: int, *args: str, umask: int = 0o022, groups=(GROUP,)) -> subprocess.CompletedProcess:
    home = Path(tempfile.mkdtemp(prefix=f"home-{uid}-"))
    os.chown(home, uid, -1)
    try:
        return subprocess.run([sys.executable, "-m", "trtbuild", *args], user=uid, group=groups[0] if groups else uid,
                              extra_groups=list(groups), umask=umask, cwd=home, capture_output=True, text=True,
                              env=os.environ | {"HOME": str(home), "PYTHONPATH": str(REPO)}, timeout=300)
    finally:
        shutil.rmtree(home, ignore_errors=True)


# A tiny BERT made from its config, saved as a Hugging Face checkpoint, loaded with from_pretrained
TINY_BERT = """
import sys, torch
from transformers import BertConfig, BertModel
for seed in sys.argv[2:]:
    torch.manual_seed(int(seed))
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model = BertModel(config)
    with torch.no_grad():  # trained: no two weights alike (fresh biases are all zero)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(f"{sys.argv[1]}/{seed}")
"""
TINY_BERT_SEEDS = (0, 1)
FROM_PRETRAINED = ("from pathlib import Path\nfrom transformers import BertModel\n\n\n"
                   "def build():\n    return BertModel.from_pretrained(Path(__file__).with_name('ckpt'))\n")


def make_tiny_berts(folder: Path) -> None:
    """The checkpoints of TINY_BERT_SEEDS, in `folder`/SEED (one process: torch and transformers load once)."""
    subprocess.run([sys.executable, "-c", TINY_BERT, str(folder), *map(str, TINY_BERT_SEEDS)], check=True,
                   capture_output=True)


def save_tiny_bert(folder: Path, seed: int, made: Path) -> None:
    """The checkpoint of `seed` (made once per test run, in `made`: the tiny_berts fixture) written into
    `folder`/ckpt, each file afresh: the same seed writes the same bytes, another seed retrains it."""
    (folder / "ckpt").mkdir(exist_ok=True)
    for file in (made / str(seed)).iterdir():
        shutil.copyfile(file, folder / "ckpt" / file.name)


def tiny_bert_recipe(folder: Path, inputs: dict, **more) -> Path:
    """net.py loading `folder`/ckpt with from_pretrained, and its recipe (BertModel's two outputs)."""
    (folder / "net.py").write_text(FROM_PRETRAINED)
    (folder / "net.yaml").write_text(json.dumps({
        "name": "bert", "source": {"framework": "pytorch", "entrypoint": "net:build",
                                   "outputs": ["last_hidden_state", "pooler_output"]},
        "inputs": inputs, "engine": {"backend": "tensorrt-rtx", "optimization_level": 0}, **more}))
    return folder / "net.yaml"


def run_in_a_worker(job: dict, log: Path) -> dict:
    """`job` run by a real worker process, as a build's runner hands it one: the worker's reply."""
    from trtbuild.execution.executor import Task
    from trtbuild.execution.pool import WorkerPool

    pool = WorkerPool(1)
    try:
        return pool.run(Task(job, log))
    finally:
        pool.close()
