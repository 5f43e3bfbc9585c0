"""A PyTorch model's inputs bind to its forward() parameters by name, whatever order the recipe lists
them in; a recipe input that names no parameter is a recipe error at its line. Real torch.onnx exports
and TensorRT-RTX plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import build_recipe as build

pytest.importorskip("torch")


def line_of(recipe: Path, text: str) -> str:
    """"compose.yaml:7" for the first line of the recipe holding `text`, as errors locate recipe keys."""
    lines = recipe.read_text().splitlines()
    return f"{recipe}:{next(i for i, line in enumerate(lines, 1) if text in line)}"


COMPOSE = '''
import torch


class Compose(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, image, background, steps):
        return self.conv(image) - background * steps.float().mean()


def build():
    return Compose()
'''


def compose_recipe(order: list[str]) -> dict:
    specs = {"image": {"shape": [1, 3, 8, 8]}, "background": {"shape": [1, 3, 8, 8]},
             "steps": {"dtype": "int64", "shape": [1]}}
    return {"name": "compose", "source": {"framework": "pytorch", "entrypoint": "compose:build"},
            "inputs": {n: specs[n] for n in order}, "engine": {"backend": "tensorrt-rtx", "optimization_level": 0}}


@pytest.mark.slow
def test_inputs_bind_to_forward_parameters_by_name(tmp_path):
    """The same exported bytes from two folders (dynamo writes no stack trace, whose paths differ)."""
    onnx_bytes = []
    for i, order in enumerate((["image", "background", "steps"], ["steps", "background", "image"])):
        root = tmp_path / str(i)
        root.mkdir()
        (root / "compose.py").write_text(COMPOSE)
        (root / "compose.yaml").write_text(json.dumps(compose_recipe(order)))
        code, report = build(root / "compose.yaml")
        assert code == 0, report
        export = next(s for s in report["steps"] if s["step"] == "export")
        onnx_bytes.append(Path(export["outputs"]["model.onnx"]).read_bytes())
    assert onnx_bytes[0] == onnx_bytes[1]


def test_an_input_that_names_no_parameter_is_a_recipe_error(tmp_path):
    (tmp_path / "compose.py").write_text(COMPOSE)
    recipe = compose_recipe(["image", "background"])
    recipe["inputs"]["mask"] = recipe["inputs"].pop("background")
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    code, report = build(tmp_path / "compose.yaml")
    assert code == 2
    error = report["steps"][0]["error"]
    assert "inputs.mask: forward() has no parameter 'mask' (its parameters: image, background, steps)" in error
    assert f"{line_of(tmp_path / 'compose.yaml', 'mask:')}: inputs.mask" in error
