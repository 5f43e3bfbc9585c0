"""Framework front-ends: load a source model, export it to ONNX, and run it for parity checks.

Each module offers load(spec), export(model, spec, out_path) -> metadata and
predict(model, spec, feeds) -> outputs (a list in output order, or a dict by ONNX output name).
They import their framework inside those functions, in worker processes.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from trtbuild.errors import UsageError

MODULES = {
    "pytorch": "trtbuild.frontends.pytorch",
    "tensorflow": "trtbuild.frontends.tensorflow",
    "keras": "trtbuild.frontends.tensorflow",
}
# framework -> (modules that must import, the extra that installs them)
REQUIREMENTS = {
    "pytorch": (("torch",), "torch"),
    "tensorflow": (("tensorflow", "tf2onnx"), "tensorflow"),
    "keras": (("tensorflow", "keras", "tf2onnx"), "tensorflow"),
}
# framework -> distributions whose versions go into the export and parity keys
TOOLS = {
    "pytorch": ("torch", "onnx", "numpy"),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tf2onnx", "onnx", "numpy", "protobuf"),
    "keras": ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "numpy", "protobuf"),
}

# framework -> modules an export imports before the user's code runs: installed tools, keyed by version,
# whose thousands of imports need not be watched (trtbuild.store.discovered)
PRELOAD = {
    "pytorch": ("torch", "torch.onnx"),
    "tensorflow": ("tensorflow", "tf2onnx"),
    "keras": ("keras", "tf2onnx"),
}

# framework -> the opset its exporter writes when the recipe sets none (each exporter's best-tested)
DEFAULT_OPSET = {"pytorch": 18, "tensorflow": 17, "keras": 17}


@dataclass
class ModelSpec:
    """What a framework needs to load and export a model; built from a step's params and inputs."""

    framework: str
    opset: int
    inputs: dict[str, dict]  # name -> {dtype, shape, opt}, in the ONNX model's layout; dtype may be None
    path: Path | None = None
    entrypoint: str | None = None
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    checkpoint: Path | None = None
    exporter: str = "auto"
    outputs: list[str] = field(default_factory=list)
    inputs_as_nchw: list[str] = field(default_factory=list)
    python_path: list[str] = field(default_factory=list)
    where: dict[str, str] = field(default_factory=dict)  # dotted recipe key -> "file:line"
    data: Path | None = None  # parity.data: integer inputs' example values are drawn from it
    reference: bool = False  # the framework's outputs on the parity inputs are wanted after the export
    graph_template: Path | None = None  # where the exporter's unoptimized graph is kept (steps.reweight)

    def at(self, key: str) -> str:
        """`file:line` of a recipe key (e.g. "source.outputs", "inputs.x"), for errors the recipe causes."""
        while key and key not in self.where:
            key = key.rpartition(".")[0]
        return self.where.get(key) or self.where.get("recipe", "recipe")


def require(framework: str) -> None:
    """Fail early (exit 2) with the install command when a framework is missing. No import happens."""
    modules, extra = REQUIREMENTS[framework]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"source.framework {framework!r} needs {', '.join(missing)}, which is not installed: "
            f"pip install 'trtbuild[{extra}]'"
        )


def load_framework(framework: str) -> ModuleType:
    return importlib.import_module(MODULES[framework])
