"""Weights-only rebuilds: new weights for an unchanged model (a retrained Hugging Face checkpoint read by
from_pretrained, a recipe's `checkpoint:` state_dict) go into the last exported graph instead of a new
export; parity with the framework holds and the engine is rebuilt. Weights that no longer fit the graph
(a changed shape) get a full export, and the report says why."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs
from helpers import save_tiny_bert, tiny_bert_recipe
from trtbuild.planning import weights
from trtbuild.store import syscall_filter

ENGINE = {"backend": "tensorrt-rtx", "optimization_level": 0}


def cli(recipe: Path, *args: str) -> tuple[int, dict, str]:
    """The real CLI in a process of its own: (exit code, {step: report entry}, stderr)."""
    report = recipe.parent / "report.json"
    report.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "trtbuild", str(recipe), "--cache-dir", str(recipe.parent / "cache"),
                           "--report", str(report), *args], capture_output=True, text=True, env=os.environ, timeout=900)
    steps = {s["step"]: s for s in json.loads(report.read_text())["steps"]} if report.exists() else {}
    return done.returncode, steps, done.stderr


def plan_digest(steps: dict) -> str:
    cache = Path(steps["engine"]["outputs"]["model.plan"]).parents[3]
    record = json.loads(next((cache / "actions").glob(f"*/{steps['engine']['key']}.json")).read_text())
    return record["outputs"]["model.plan"]["digest"]


def assert_weights_only(first: dict, second: dict, swap: str) -> None:
    export = second["export"]
    assert export["status"] == "built"
    assert export["reason"].startswith("weights changed: "), export["reason"]
    assert "no new export" in export["reason"], export["reason"]
    done = export["meta"]["weights_only"]
    assert done["from"] == first["export"]["key"] and done["weights"] > 0
    assert done["max_relative_error"] <= 1e-5
    assert done["swap"].startswith(swap), done["swap"]
    assert second["parity"]["status"] == "built"  # ONNX Runtime on the swapped graph agrees with the framework
    assert second["engine"]["status"] == "built" and second["engine"]["key"] != first["engine"]["key"]
    assert plan_digest(second) != plan_digest(first)




@pytest.mark.slow
@pytest.mark.skipif(bool(syscall_filter.unavailable()),
                    reason=f"system calls not watched here: {syscall_filter.unavailable()}")
def test_a_retrained_bert_checkpoint_takes_the_last_graph_without_a_new_export(tmp_path, tiny_berts):
    needs("transformers")
    save = functools.partial(save_tiny_bert, tmp_path, made=tiny_berts)
    save(0)
    tiny_bert_recipe(tmp_path, {
        "input_ids": {"dtype": "int64", "shape": [-1, 16], "min": [1, 16], "opt": [2, 16], "max": [4, 16]},
        "attention_mask": {"dtype": "int64", "shape": [-1, 16], "min": [1, 16], "opt": [2, 16], "max": [4, 16]}})
    code, first, err = cli(tmp_path / "net.yaml")
    assert code == 0, err
    assert first["export"]["meta"]["exporter"] == "dynamo" and "graph-template.onnx" in first["export"]["outputs"]

    save(1)  # retrained
    code, dry, _ = cli(tmp_path / "net.yaml", "--dry-run")
    assert dry["export"]["status"] == "would-run"
    assert dry["export"]["reason"] == "weights changed: ckpt/model.safetensors"
    code, second, err = cli(tmp_path / "net.yaml")
    assert code == 0, err
    # weights as they are or moved by exact ops (transposed, sliced): copied in, no optimizer
    assert_weights_only(first, second, "direct")
    assert "copied in by name, no new export" in second["export"]["reason"]

    # the config moved too (a graph input): a full export, as before
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config | {"layer_norm_eps": 1e-6}))
    code, third, err = cli(tmp_path / "net.yaml")
    assert code == 0, err
    assert "weights_only" not in third["export"]["meta"]
    assert "ckpt/config.json changed" in third["export"]["reason"]


CONV_NET = """
from pathlib import Path

import torch


class Net(torch.nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)  # the exporter's optimizer fuses it into the conv
        self.fc = torch.nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def build():  # the head's size comes from the checkpoint, as many loaders do it
    return Net(torch.load(Path(__file__).with_name("net.pt"), weights_only=True)["fc.weight"].shape[0])
"""


def save_state(folder: Path, seed: int, classes: int = 10) -> None:
    import torch

    sys.path.insert(0, str(folder))
    try:
        import importlib

        net = importlib.import_module("net")
        torch.manual_seed(seed)
        model = net.Net(classes)
        with torch.no_grad():  # trained: BatchNorm statistics and weights away from their defaults
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.add_(torch.rand_like(t) * 0.5)
        torch.save(model.state_dict(), folder / "net.pt")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("net", None)


@pytest.mark.slow
def test_a_new_checkpoint_state_dict_takes_the_last_graph_and_a_new_shape_exports_again(tmp_path):
    needs("torch")
    (tmp_path / "net.py").write_text(CONV_NET)
    save_state(tmp_path, 0)
    (tmp_path / "net.yaml").write_text(json.dumps({
        "name": "convnet", "source": {"framework": "pytorch", "entrypoint": "net:build", "checkpoint": "net.pt"},
        "inputs": {"x": {"shape": [-1, 3, 16, 16], "min": [1, 3, 16, 16], "opt": [2, 3, 16, 16], "max": [4, 3, 16, 16]}},
        "engine": ENGINE}))
    code, first, err = cli(tmp_path / "net.yaml")
    assert code == 0, err

    save_state(tmp_path, 1)
    code, second, err = cli(tmp_path / "net.yaml")
    assert code == 0, err
    assert second["export"]["reason"].startswith("weights changed: net.pt (source.checkpoint)")
    # the BatchNorm fused into the Conv changes the Conv's weight: the optimizer runs again
    assert_weights_only(first, second, "optimizer: the optimizer changed weight 'model.conv.weight'")
    assert "through the exporter's optimizer, no new export" in second["export"]["reason"]

    save_state(tmp_path, 2, classes=12)  # a new head: the graph does not take it
    code, third, err = cli(tmp_path / "net.yaml")
    assert code == 0, err
    export = third["export"]
    assert export["status"] == "built"
    why = export["meta"]["weights_only"]["fallback"]
    assert "'model.fc.weight' is [12, 8] float now, [10, 8] float in the last export" in why, why
    assert export["reason"] == f"weights changed: net.pt (source.checkpoint); exported again: {why}"
    assert third["parity"]["status"] == "built"
    assert "weights_only" not in third["parity"].get("meta", {})


def test_weight_files_are_told_by_name_and_content(tmp_path):
    import zipfile

    (tmp_path / "a.safetensors").write_bytes((8).to_bytes(8, "little") + b"{}      ")
    with zipfile.ZipFile(tmp_path / "b.bin", "w") as z:
        z.writestr("archive/data.pkl", b"x")
    (tmp_path / "c.bin").write_bytes(b"\x00\x01raw vocabulary")  # not tensors: a tokenizer's file, say
    (tmp_path / "d.json").write_text("{}")
    assert weights.is_weights(tmp_path / "a.safetensors") and weights.is_weights(tmp_path / "b.bin")
    assert not weights.is_weights(tmp_path / "c.bin") and not weights.is_weights(tmp_path / "d.json")
    found = {"files": {"a.safetensors": "1" * 64, "d.json": "2" * 64}, "absent": {"e.pt": ""}}
    moved, rest = weights.split(found, tmp_path)
    assert moved == {"files": {"a.safetensors": "1" * 64}}
    assert rest == {"files": {"d.json": "2" * 64}, "absent": {"e.pt": ""}}


def test_the_graph_part_of_a_key_leaves_out_the_checkpoint_only():
    components = {"kind": "export", "params": {"opset": 18}, "tools": {"torch": "2"},
                  "inputs": {"checkpoint": {"(main)": "a"}, "code": {"(main)": "b"}}}
    other = components | {"inputs": {"checkpoint": {"(main)": "z"}, "code": {"(main)": "b"}}}
    assert weights.graph_part(components) == weights.graph_part(other)
    assert weights.weights_part(other) == {"checkpoint": {"(main)": "z"}}
    code = components | {"inputs": {"checkpoint": {"(main)": "a"}, "code": {"(main)": "c"}}}
    assert weights.graph_part(components) != weights.graph_part(code)


TEMPLATE_SCRIPT = """
import sys
from pathlib import Path

TMP = Path(sys.argv[1])
import numpy as np
import onnxruntime
import torch

from trtbuild.frontends.torch_template import NotWeightsOnly, capture, reweight

class Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def forward(self, x):
        h = self.bn(self.conv(x)).mean((2, 3))
        return self.b(self.a(h))

def export(model, path, template=None):
    with capture(template) if template else torch.no_grad():
        torch.onnx.export(model.eval(), (torch.randn(2, 3, 4, 4),), str(path), dynamo=True, opset_version=18,
                          input_names=["x"], output_names=["y"], external_data=False)

def trained(seed):
    torch.manual_seed(seed)
    model = Two()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t))
    return model.eval()

x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
run = lambda path: onnxruntime.InferenceSession(str(path)).run(None, {"x": x})[0]
export(trained(0), TMP / "last.onnx", TMP / "template.onnx")
new = trained(1)
export(new, TMP / "full.onnx")
done = reweight(TMP / "template.onnx", TMP / "last.onnx", new.state_dict(), TMP / "new.onnx")
assert done["weights"] == len(new.state_dict()) - 1  # all but BatchNorm's num_batches_tracked, which the graph lacks
# the BatchNorm fused into the Conv changes the Conv's weight: no copy by name, the optimizer again
assert done["swap"].startswith("optimizer: the optimizer changed weight 'conv.weight'"), done
np.testing.assert_array_equal(run(TMP / "new.onnx"), run(TMP / "full.onnx"))
import onnx  # what a full export of the new weights writes, bit for bit
assert [i.raw_data for i in onnx.load(TMP / "new.onnx").graph.initializer] == [
    i.raw_data for i in onnx.load(TMP / "full.onnx").graph.initializer]

fresh = Two().eval()  # two equal biases (as fresh zeros are): the optimizer keeps one initializer for both
with torch.no_grad():
    fresh.b.bias.copy_(fresh.a.bias)
export(fresh, TMP / "merged.onnx", TMP / "merged-template.onnx")
try:
    reweight(TMP / "merged-template.onnx", TMP / "merged.onnx", new.state_dict(), TMP / "x.onnx")
except NotWeightsOnly as exc:
    assert "weights it merged or folded differ" in str(exc), exc
else:
    raise AssertionError("merged weights were swapped")
print("ok")
"""


def test_the_template_refilled_computes_what_a_full_export_does_and_merged_weights_fall_back(tmp_path):
    """In a process of its own: torch.export imports triton, which crashes a process that loaded TensorFlow."""
    needs("torch")
    done = subprocess.run([sys.executable, "-c", TEMPLATE_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


DIRECT_SCRIPT = """
import sys
from pathlib import Path

TMP = Path(sys.argv[1])
import numpy as np
import onnx
import onnxruntime
import torch

from trtbuild.frontends import torch_direct
from trtbuild.frontends.torch_template import NotWeightsOnly, capture, reweight

class Tokens(torch.nn.Module):  # what a transformer's weights go through: no BatchNorm to fuse
    def __init__(self, scaled=False):
        super().__init__()
        self.pos = torch.nn.Embedding(16, 8)
        self.inner = torch.nn.Linear(8, 8)  # on [batch, seq, 8]: MatMul with the weight transposed, folded
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 4)  # on [batch, 8]: Gemm, the weight as it is
        self.scaled = scaled

    def forward(self, x):
        h = x + self.pos.weight[: x.shape[1]]  # a slice of the table, folded
        w = self.inner.weight * 2 if self.scaled else self.inner.weight  # arithmetic on a weight, folded
        h = self.norm(torch.nn.functional.linear(h, w, self.inner.bias))
        return self.head(h.mean(1))

def export(model, path, template=None):
    with capture(template) if template else torch.no_grad():
        torch.onnx.export(model.eval(), (torch.randn(2, 6, 8),), str(path), dynamo=True, opset_version=18,
                          input_names=["x"], output_names=["y"], external_data=False)

def trained(seed, **kw):
    torch.manual_seed(seed)
    model = Tokens(**kw)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(torch.rand_like(t))
    return model.eval()

x = np.random.default_rng(0).standard_normal((2, 6, 8)).astype(np.float32)
run = lambda path: onnxruntime.InferenceSession(str(path)).run(None, {"x": x})[0]
for scaled in (False, True):
    tag = "scaled" if scaled else "plain"
    export(trained(0, scaled=scaled), TMP / f"{tag}-last.onnx", TMP / f"{tag}-template.onnx")
    new = trained(1, scaled=scaled)
    export(new, TMP / f"{tag}-full.onnx")
    done = reweight(TMP / f"{tag}-template.onnx", TMP / f"{tag}-last.onnx", new.state_dict(), TMP / f"{tag}-new.onnx")
    assert done["weights"] == len(new.state_dict()), done
    swapped, full = onnx.load(TMP / f"{tag}-new.onnx"), onnx.load(TMP / f"{tag}-full.onnx")
    # what a full export of the new weights writes, bit for bit, initializer by initializer
    assert [i.raw_data for i in swapped.graph.initializer] == [i.raw_data for i in full.graph.initializer]
    np.testing.assert_array_equal(run(TMP / f"{tag}-new.onnx"), run(TMP / f"{tag}-full.onnx"))
    print(tag, done["swap"])

merged = trained(0)  # equal biases at export time: the optimizer keeps one initializer for both
with torch.no_grad():
    merged.inner.bias.copy_(merged.norm.bias)
export(merged, TMP / "merged-last.onnx", TMP / "merged-template.onnx")
proof = torch_direct.read(onnx.load(TMP / "merged-template.onnx", load_external_data=False))
assert "took weight" in proof["why"] and "merged" in proof["why"], proof
try:
    reweight(TMP / "merged-template.onnx", TMP / "merged-last.onnx", trained(1).state_dict(), TMP / "x.onnx")
except NotWeightsOnly as exc:
    assert "weights it merged or folded differ" in str(exc), exc
else:
    raise AssertionError("merged weights were swapped")
print("ok")
"""


def test_weights_a_graph_keeps_or_only_moves_are_copied_in_and_arithmetic_on_them_runs_the_optimizer(tmp_path):
    """A Linear's weight transposed and a slice of a position table are recomputed exactly, the rest copied
    by name; a weight the model's code multiplies is folded by arithmetic: the optimizer runs again; weights
    the optimizer merged (equal at export time) are no proof, and the rebuild exports again."""
    needs("torch")
    import importlib.metadata

    torch_version = tuple(int(p) for p in importlib.metadata.version("torch").split("+")[0].split(".")[:2])
    if torch_version < (2, 13):  # trtbuild's own floor (pyproject: torch>=2.13)
        pytest.skip(f"torch {importlib.metadata.version('torch')} is older than trtbuild supports (2.13): its dynamo "
                    "exporter fails on a weight times a scalar (\"Expected same OpOverload packet, got prim.device\")")
    done = subprocess.run([sys.executable, "-c", DIRECT_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("plain ", "scaled ")))
    assert lines["plain"] == "direct", lines
    assert lines["scaled"].startswith("optimizer: ") and "Mul, which computes" in lines["scaled"], lines
