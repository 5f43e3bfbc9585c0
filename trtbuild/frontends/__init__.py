"""Framework front-ends: load a source model, export it to ONNX, and run it for parity checks.

Each module offers load(spec), export(model, spec, out_path) -> metadata and
predict(model, spec, feeds) -> outputs (a list in output order, or a dict by ONNX output name).
They import their framework inside those functions, in worker processes. What else trtbuild knows of a
framework (requirements, tools, default opset...) is its descriptor (trtbuild.frontends.registry).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
