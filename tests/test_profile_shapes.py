"""An engine only for shapes its model can run: the exported model runs in ONNX Runtime at min, opt and
max of every profile (and against the framework there, with parity on) before any engine is built.
Real torch.onnx exports (dynamo and TorchScript), ONNX Runtime and TensorRT-RTX plans.

Run on the pinned torch and on the oldest torch trtbuild supports (.ci/run): what an exporter
specialises differs between torch releases; the refusal must not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import build_recipe, nets_module, statuses

pytest.importorskip("torch")

NETS = '''
import torch


class Decoder(torch.nn.Module):
    """A decode step: one new token is a special case, as KV-cache decoders branch on q_length == 1."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        if x.shape[1] == 1:
            return self.proj(x.reshape(x.shape[0], 8))
        return self.proj(x.mean(1))


class CachedDecoder(torch.nn.Module):
    """The decode step over a cache: new tokens [batch, length, 8] after past ones [batch, past, 8]."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x, past):
        if x.shape[1] == 1:
            new = self.proj(x.reshape(x.shape[0], 8)).unsqueeze(1)
        else:
            new = self.proj(x)
        return torch.cat([past, new], 1)
'''

ENGINE = {"backend": "tensorrt-rtx", "workspace": "256MiB", "optimization_level": 0}


@pytest.fixture
def nets(tmp_path, monkeypatch):
    yield from nets_module(NETS, tmp_path, monkeypatch)


def write_recipe(root: Path, opt_length: int, opset: int | None = None, parity: bool = True,
                 profiles: list[dict] | None = None) -> Path:
    x = {"shape": [-1, -1, 8]}
    if profiles is None:
        x |= {"min": [1, 1, 8], "opt": [2, opt_length, 8], "max": [4, 16, 8]}
    data = {"name": "net", "source": {"framework": "pytorch", "entrypoint": "nets:Decoder"}, "inputs": {"x": x},
            "engine": ENGINE}
    if profiles is not None:
        data["profiles"] = profiles
    if opset:
        data["onnx"] = {"opset": opset}
    if not parity:
        data["parity"] = {"enabled": False}
    recipe = root / "net.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    return recipe


def line_of(recipe: Path, text: str) -> str:
    lines = recipe.read_text().splitlines()
    return f"{recipe}:{next(i for i, line in enumerate(lines, 1) if text in line)}"


def export_error(report: dict) -> str:
    export = report["steps"][0]
    assert export["step"] == "export" and export["status"] == "failed"
    assert [s["status"] for s in report["steps"] if s["step"] == "engine"] == ["skipped"]  # no engine
    return export["error"]


@pytest.mark.parametrize("opset", [None, 17])  # dynamo, and TorchScript checked by torch.export
def test_a_dim_the_export_fixes_at_opt_1_is_a_recipe_error_naming_input_dim_and_fix(nets, opset):
    recipe = write_recipe(nets, opt_length=1, opset=opset)
    code, report = build_recipe(recipe)
    assert code == 2, report
    error = export_error(report)
    assert "\n" not in error
    assert error.startswith(f"{line_of(recipe, 'x:')}: inputs.x: ")
    assert "dim 1" in error and "make opt of dim 1 2 or more (the export traces at opt)" in error


def test_with_parity_off_onnx_runtime_alone_refuses_the_shape_it_cannot_run(nets):
    recipe = write_recipe(nets, opt_length=1, opset=17, parity=False)
    code, report = build_recipe(recipe)
    assert code == 2, report
    error = export_error(report)
    assert error.startswith(f"{line_of(recipe, 'x:')}: inputs.x: at max [4, 16, 8] (it runs at opt [2, 1, 8]) the "
                            "exported model fails in ONNX Runtime (")
    assert "Reshape" in error and "onnxruntime_src" not in error
    assert error.endswith("the export fixed dim 1 at 1, its size at opt (torch fixes a dynamic dim whose example size "
                          "is 1, and code that branches on the size, such as `x.shape[1] == 1`, keeps the path taken "
                          "there): make opt of dim 1 2 or more (the export traces at opt)")


@pytest.mark.slow
def test_opt_above_1_builds_and_the_tracers_size_warning_is_a_report_warning(nets):
    recipe = write_recipe(nets, opt_length=4, opset=17)
    code, report = build_recipe(recipe)
    assert code == 0, report
    assert statuses(report) == {"export": "built", "check": "built", "parity": "built", "simplify": "built",
                                "engine": "built"}
    export = report["steps"][0]
    assert export["meta"]["shapes_run"] == ["opt", "min", "max"]
    [warning] = export["meta"]["warnings"]
    assert warning.startswith("the TorchScript trace took a size as a Python value at nets.py:13 "
                              "(`if x.shape[1] == 1:`): the ONNX model keeps what it was at opt")
    [engine] = [s for s in report["steps"] if s["step"] == "engine"]
    assert engine["meta"]["inputs"][0]["max"] == [4, 16, 8]
    data = yaml.safe_load(recipe.read_text())
    data["inputs"]["x"]["max"] = [4, 12, 8]  # a promise the model must be run at: the export runs again
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    code, report = build_recipe(recipe, "--dry-run")
    assert report["steps"][0]["status"] == "would-run" and "ranges" in report["steps"][0]["reason"]


def test_every_profile_is_run_and_the_failing_one_is_named(nets):
    # traced at the first profile's opt (length 1); the prompt profile's lengths fail in ONNX Runtime
    profiles = [{"name": "decode", "inputs": {"x": {"min": [1, 1, 8], "opt": [2, 1, 8], "max": [4, 1, 8]}}},
                {"name": "prompt", "inputs": {"x": {"min": [1, 2, 8], "opt": [2, 8, 8], "max": [4, 16, 8]}}}]
    recipe = write_recipe(nets, opt_length=1, opset=17, parity=False, profiles=profiles)
    code, report = build_recipe(recipe)
    assert code == 2, report
    error = export_error(report)
    assert error.startswith(f"{recipe}:")
    assert ": inputs.x: at profile 'prompt' opt [2, 8, 8] (it runs at profile 'decode' opt [2, 1, 8]) the exported " \
           "model fails in ONNX Runtime (" in error
    assert error.endswith("make the first profile's opt of dim 1 2 or more (the export traces at opt)")


def test_the_dim_the_export_fixed_is_named_where_inputs_share_a_batch(nets):
    # moving x's batch alone (4 new tokens' rows over a cache of 2) fails whatever the export did; the
    # batch moves with the cache's, and the sequence the trace fixed at 1 is what is named
    data = {"name": "net", "source": {"framework": "pytorch", "entrypoint": "nets:CachedDecoder"},
            "inputs": {"x": {"min": [1, 1, 8], "opt": [2, 1, 8], "max": [4, 16, 8]},
                       "past": {"min": [1, 1, 8], "opt": [2, 4, 8], "max": [4, 8, 8]}},
            "parity": {"enabled": False}, "engine": ENGINE}
    recipe = nets / "net.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    code, report = build_recipe(recipe)
    assert code == 2, report
    error = export_error(report)
    assert error.startswith(f"{line_of(recipe, 'x:')}: inputs.x: at max [4, 16, 8] (it runs at opt [2, 1, 8]) ")
    assert error.endswith("the export fixed dim 1 at 1, its size at opt (torch fixes a dynamic dim whose example size "
                          "is 1, and code that branches on the size, such as `x.shape[1] == 1`, keeps the path taken "
                          "there): make opt of dim 1 2 or more (the export traces at opt)")


def test_dims_equal_by_chance_at_every_shape_are_told_apart(nets):
    # batch and length are 1, 1, 4 at min, opt and max: they move together, and where both together fail,
    # the one that fails alone (the length the trace fixed) is named, not the batch beside it
    recipe = write_recipe(nets, opt_length=1, opset=17, parity=False,
                          profiles=[{"name": "square", "inputs": {"x": {"min": [1, 1, 8], "opt": [1, 1, 8],
                                                                        "max": [4, 4, 8]}}}])
    code, report = build_recipe(recipe)
    assert code == 2, report
    error = export_error(report)
    assert ": inputs.x: at max [4, 4, 8] (it runs at opt [1, 1, 8]) the exported model fails in ONNX Runtime (" in error
    assert error.endswith("make opt of dim 1 2 or more (the export traces at opt)")
