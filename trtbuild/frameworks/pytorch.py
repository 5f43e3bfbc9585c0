"""PyTorch: an entrypoint ("module:callable") or a TorchScript / ExportedProgram file -> ONNX via torch.onnx."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

from trtbuild.errors import StepError
from trtbuild.frameworks import ModelSpec
from trtbuild.tensors import example_inputs


def load(spec: ModelSpec):
    import torch

    if spec.entrypoint:
        sys.path[:0] = spec.python_path
        module_name, _, attr = spec.entrypoint.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise StepError(f"source.entrypoint {spec.entrypoint!r}: {exc}", user_error=True) from None
        # Seeded so export and parity build the same random weights when there is no checkpoint.
        torch.manual_seed(0)
        model = obj(*spec.args, **spec.kwargs)
        if not isinstance(model, torch.nn.Module):
            raise StepError(f"source.entrypoint {spec.entrypoint!r} returned {type(model).__name__}, not a torch.nn.Module",
                            user_error=True)
    elif spec.path.suffix == ".pt2":
        model = torch.export.load(str(spec.path)).module()
    else:
        model = torch.jit.load(str(spec.path), map_location="cpu")
    if spec.checkpoint:
        state = torch.load(str(spec.checkpoint), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise StepError(f"source.checkpoint does not fit the model: {str(exc).splitlines()[0]}", user_error=True) from None
    return model.eval()


def export(model, spec: ModelSpec, out: Path) -> dict:
    import torch

    names = list(spec.inputs)
    example = tuple(torch.from_numpy(a) for a in example_inputs(spec.inputs, seed=0).values())
    dynamic = {n: [i for i, d in enumerate(s["shape"]) if d == -1] for n, s in spec.inputs.items()}
    common = dict(opset_version=spec.opset, input_names=names, output_names=spec.outputs or None)
    with torch.no_grad():
        if spec.exporter == "torchscript":
            axes = {n: {i: f"{n}_{i}" for i in dims} for n, dims in dynamic.items() if dims}
            torch.onnx.export(model, example, str(out), dynamic_axes=axes or None, dynamo=False, **common)
        else:
            shapes = tuple(
                {i: torch.export.Dim(f"{_ident(n)}_{i}", min=spec.inputs[n]["min"][i], max=spec.inputs[n]["max"][i])
                 for i in dims}
                for n, dims in dynamic.items()
            )
            torch.onnx.export(model, example, str(out), dynamic_shapes=shapes, dynamo=True, **common)
    return {"exporter": spec.exporter, "torch": torch.__version__}


def predict(model, spec: ModelSpec, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        result = model(*(torch.from_numpy(feeds[n]) for n in spec.inputs))
    return [t.detach().cpu().numpy() for t in _flatten(result)]


def _flatten(result) -> list:
    if isinstance(result, dict):
        return [t for v in result.values() for t in _flatten(v)]
    if isinstance(result, (list, tuple)):
        return [t for v in result for t in _flatten(v)]
    return [result]


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
