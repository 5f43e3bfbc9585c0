"""The small PyTorch models of the PyTorch-source tests (written as nets.py into each test's folder) and what
those tests share: the recipe they build, where a recipe line is, the plan's outputs, the export's error."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

NETS = '''
import torch


class Single(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        return torch.relu(self.conv(x))


class TwoHeads(Single):
    """A segmentation map and class scores, by name; an absent head is None."""

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return {"seg": y, "cls": self.fc(y.mean((2, 3))), "aux": None}


class ThreeHeads(Single):
    """A dict of three, as Hugging Face models return logits beside hidden states."""

    def forward(self, x):
        hidden = torch.relu(self.conv(x))
        pooled = hidden.mean((2, 3))
        return {"hidden": hidden, "pooled": pooled, "logits": self.fc(pooled)}


class Nested(Single):
    def forward(self, x):
        y = torch.relu(self.conv(x))
        return y, (self.fc(y.mean((2, 3))), y.sum(1))


class Counted(Single):
    def forward(self, x):
        return {"seg": torch.relu(self.conv(x)), "count": x.shape[0]}


class BatchStats(torch.nn.Module):
    """Normalized by the batch's own statistics, at inference too: refuses a batch of 1."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(8, track_running_stats=False)

    def forward(self, x):
        return {"z": self.norm(x)}


class WidthBound(Single):
    """Made for one width, as a Python value (timm's Swin partitions windows this way)."""

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return y * 2.0 if x.shape[-1] == 16 else y


class Tokens(torch.nn.Module):
    """Five token ids and BERT's two sentence ids: 0..9 would be out of range for both."""

    def __init__(self):
        super().__init__()
        self.words, self.sentences = torch.nn.Embedding(5, 4), torch.nn.Embedding(2, 4)

    def forward(self, input_ids, token_type_ids):
        return self.words(input_ids) + self.sentences(token_type_ids)


class Checked(Single):
    """Refuses NaN input: a branch on tensor values, which torch.export cannot capture and tracing passes."""

    def forward(self, x):
        if torch.isnan(x).any():
            raise ValueError("NaN in the input")
        return torch.relu(self.conv(x))
'''

X = {"shape": [-1, 3, 16, 16], "min": [1, 3, 16, 16], "opt": [2, 3, 16, 16], "max": [4, 3, 16, 16]}
ENGINE = {"backend": "tensorrt-rtx", "workspace": "256MiB", "optimization_level": 0}
ALL_BUILT = {"export": "built", "check": "built", "parity": "built", "simplify": "built", "engine": "built"}


def write_recipe(root: Path, x: dict | None = None, opset: int | None = None, **source) -> Path:
    source = source or {"entrypoint": "nets:Single"}
    recipe = root / "net.yaml"
    data = {"name": "net", "source": {"framework": "pytorch", **source}, "inputs": {"x": x or X}, "engine": ENGINE}
    if opset:
        data["onnx"] = {"opset": opset}
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    return recipe


def line_of(recipe: Path, text: str) -> str:
    """"net.yaml:7" for the first line of the recipe holding `text`, as errors locate recipe keys."""
    lines = recipe.read_text().splitlines()
    return f"{recipe}:{next(i for i, line in enumerate(lines, 1) if text in line)}"


def engine_outputs(root: Path) -> list[tuple[str, list[int]]]:
    """(name, shape) of each output of the built plan, from its published model.json."""
    [meta] = (root / "cache" / "out" / "net").glob("*/model.json")
    return [(o["name"], o["shape"]) for o in json.loads(meta.read_text())["outputs"]]


def export_error(report: dict) -> str:
    export = report["steps"][0]
    assert export["step"] == "export" and export["status"] == "failed"
    assert "\x1b[" not in export["error"]  # torch colours some errors; a recipe error is plain text
    return export["error"]
