"""PyTorch: an entrypoint ("module:callable") or a TorchScript / ExportedProgram file -> ONNX via torch.onnx.

load() returns the model wrapped in torch_outputs.Flat (outputs flattened and named); export() and
predict() both run that wrapper, so the ONNX outputs and the parity reference match by name.
"""

from __future__ import annotations

import importlib
import pickle
import re
import sys
import traceback
from pathlib import Path

import numpy as np

from trtbuild.errors import StepError, first_line
from trtbuild.frontends import ModelSpec
from trtbuild.frontends.offline import downloads_explained
from trtbuild.models.tensors import at_batch_one


def load(spec: ModelSpec):
    import torch

    with _downloads_explained(spec):
        model = _from_entrypoint(spec) if spec.entrypoint else _from_file(spec)
        if isinstance(model, torch.export.ExportedProgram):
            if spec.checkpoint:
                raise StepError(f"{spec.at('source.checkpoint')}: source.checkpoint: an ExportedProgram (.pt2) "
                                "carries its own weights; checkpoint: applies to entrypoints", user_error=True)
            # ep.module() refuses eval(): the program was captured in one mode and stays in it
            return _flatten(model.module(), spec, program=model)
        if spec.checkpoint:
            _load_checkpoint(model, spec)
        keywords = _bind_inputs(model, spec)
        return _flatten(model.eval(), spec, keywords=keywords).eval()


def _flatten(model, spec: ModelSpec, **kwargs):
    """The model wrapped in torch_outputs.Flat. What it returns is learnt at batch 1 (a ResNet-50 at
    batch 8 costs 0.6 s more), or at opt where batch 1 fails (a program captured in training mode)."""
    from trtbuild.frontends.torch_dims import example_args
    from trtbuild.frontends.torch_outputs import flatten

    if at_batch_one(spec.inputs) != spec.inputs:
        try:
            batch_one = {n: s["opt"] for n, s in at_batch_one(spec.inputs).items()}
            return flatten(model, spec, example_args(spec, batch_one), **kwargs)
        except Exception:
            traceback.print_exc()
            print("trtbuild: the model failed at batch 1 (above); running it at opt", file=sys.stderr)
    try:
        return flatten(model, spec, example_args(spec), **kwargs)
    except IndexError as exc:  # an embedding given ids it does not have
        ints = [n for n, s in spec.inputs.items() if s["dtype"] and s["dtype"].startswith(("int", "uint"))]
        if not ints or spec.data is not None:
            raise
        traceback.print_exc()
        raise StepError(f"{spec.at('inputs')}: inputs: the model rejects the integer example values trtbuild "
                        f"makes for {', '.join(ints)} ({first_line(exc)}): give parity.data, a .npz with real "
                        "values for them (export draws its integers from it)", user_error=True) from None


def _bind_inputs(model, spec: ModelSpec) -> list[str] | None:
    """The forward() parameters the recipe's inputs bind to, by name, and spec.inputs put in forward()
    order (so the recipe's order changes nothing). None binds by position: one input for one required
    parameter (names are free: `input` for forward(x)), or a forward() that takes *args or has no
    readable signature (TorchScript)."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in named if p.default is p.empty]
    names = [p.name for p in named]
    if len(spec.inputs) == 1 and len(required) <= 1 and next(iter(spec.inputs)) not in names:
        return None
    unknown = [n for n in spec.inputs if n not in names]
    if unknown:
        raise StepError("\n".join(f"{spec.at(f'inputs.{n}')}: inputs.{n}: forward() has no parameter {n!r} (its "
                                  f"parameters: {', '.join(names)}); name each input after the parameter it feeds"
                                  for n in unknown), user_error=True)
    missing = [n for n in required if n not in spec.inputs]
    if missing:
        raise StepError(f"{spec.at('inputs')}: inputs: forward() needs {', '.join(missing)}: add "
                        f"{' and '.join(f'inputs.{n}' for n in missing)}", user_error=True)
    spec.inputs = {n: spec.inputs[n] for n in names if n in spec.inputs}
    return list(spec.inputs)


def _downloads_explained(spec: ModelSpec):
    key = "source.entrypoint" if spec.entrypoint else "source.path"
    return downloads_explained(spec.at(key), f"{key} {spec.entrypoint or spec.path.name!r}")


def _from_entrypoint(spec: ModelSpec):
    import torch

    sys.path[:0] = spec.python_path
    module_name, _, attr = spec.entrypoint.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        traceback.print_exc()
        raise StepError(f"{spec.at('source.entrypoint')}: source.entrypoint {spec.entrypoint!r}: {exc}",
                        user_error=True) from None
    # Seeded so export and parity build the same random weights when there is no checkpoint.
    torch.manual_seed(0)
    model = obj(*spec.args, **spec.kwargs)
    if not isinstance(model, torch.nn.Module):
        raise StepError(f"{spec.at('source.entrypoint')}: source.entrypoint {spec.entrypoint!r} returned "
                        f"{type(model).__name__}, not a torch.nn.Module", user_error=True)
    return model


def _from_file(spec: ModelSpec):
    """An ExportedProgram (.pt2) or a TorchScript file; a torch.save file gets a message saying what it is."""
    import torch

    if spec.path.suffix == ".pt2":
        return torch.export.load(str(spec.path))
    try:
        return torch.jit.load(str(spec.path), map_location="cpu")
    except RuntimeError:
        problem = _torch_save_file(spec)
        if problem is None:
            raise
        traceback.print_exc()
        raise StepError(problem, user_error=True) from None


def _torch_save_file(spec: ModelSpec) -> str | None:
    """What is wrong when `source.path` is a torch.save file (a pickled model or a state_dict)."""
    import torch

    at = f"{spec.at('source.path')}: source.path: {spec.path.name}"
    fix = ("give the model as entrypoint: with checkpoint: a state_dict (torch.save(model.state_dict(), ...)), "
           "or save it with torch.export.save (.pt2) or torch.jit.save")
    try:
        state = torch.load(str(spec.path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        return f"{at} is a pickled Python object{_pickled_class(exc)}, not TorchScript or an ExportedProgram: {fix}"
    except Exception:  # not a torch.save file either: the TorchScript error stands
        return None
    if isinstance(state, dict):
        return f"{at} holds a state_dict (weights without the model's code): {fix}"
    return None


def _load_checkpoint(model, spec: ModelSpec) -> None:
    """Load a state_dict into `model`; one that does not fit names the keys that do not."""
    import torch

    at = f"{spec.at('source.checkpoint')}: source.checkpoint"
    try:
        state = torch.load(str(spec.checkpoint), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        traceback.print_exc()
        raise StepError(
            f"{at}: {spec.checkpoint.name} is a pickled Python object{_pickled_class(exc)}, not a state_dict: "
            "torch.save(model) pickles the model itself, which loading with weights_only=True refuses (it would run "
            "the file's code). Save torch.save(model.state_dict(), ...) and give that as checkpoint:, or save the "
            "model with torch.export.save (.pt2) or torch.jit.save and give it as path:", user_error=True) from None
    for key in ("state_dict", "model_state_dict"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise StepError(f"{at}: {spec.checkpoint.name} holds a {type(state).__name__}, not a state_dict",
                        user_error=True)
    problems = _misfit(model, state)
    if problems:
        raise StepError(f"{at}: {spec.checkpoint.name} does not fit the model: {problems}", user_error=True)


def _misfit(model, state: dict) -> str:
    """Load what fits (a wrong shape raises even with strict=False, so those keys are left out first)
    and describe what did not: missing, unexpected and wrong-shape keys; "" when all fit."""
    own = model.state_dict()
    wrong = {k: list(v.shape) for k, v in state.items()
             if k in own and hasattr(v, "shape") and v.shape != own[k].shape}
    result = model.load_state_dict({k: v for k, v in state.items() if k not in wrong}, strict=False)
    missing = [k for k in result.missing_keys if k not in wrong]
    shapes = [f"{k}: {s} in the checkpoint, {list(own[k].shape)} in the model" for k, s in wrong.items()]
    groups = [(missing, "missing"), (result.unexpected_keys, "unexpected"), (shapes, "with the wrong shape")]
    return "; ".join(f"{len(keys)} {'key' if len(keys) == 1 else 'keys'} {what} ({_first_few(keys)})"
                     for keys, what in groups if keys)


def _first_few(items: list[str], n: int = 5) -> str:
    more = f", ... and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _pickled_class(exc: BaseException) -> str:
    """" (mynet.Net)": the global weights_only loading refused, when its error names it."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f" ({found.group(1)})" if found else ""


def export(model, spec: ModelSpec, out: Path) -> dict:
    import torch

    from trtbuild.frontends import torch_export

    with _downloads_explained(spec), torch.no_grad():
        return torch_export.export(model, spec, out)


def predict(model, spec: ModelSpec, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    traced = getattr(model, "traced", None)  # the torchscript trace's run, on the same inputs: the same outputs
    if traced and len(traced[0]) == len(spec.inputs) and all(
            a.dtype == feeds[n].dtype and np.array_equal(a, feeds[n]) for a, n in zip(traced[0], spec.inputs)):
        return dict(zip(model.names, traced[1]))
    with torch.no_grad():
        result = model(*(torch.from_numpy(feeds[n]) for n in spec.inputs))
    return {name: t.detach().cpu().numpy() for name, t in zip(model.names, result)}
