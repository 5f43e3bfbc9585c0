"""The dynamo exporter's graph before optimization, kept so new weights need no new export.

torch.export traces a model with fake tensors, so the graph it makes does not depend on the values of
the weights; the ONNX translation names each weight initializer after the parameter or buffer it holds.
The optimizer that runs next is what loses those names (a Linear's transposed weight folded into
`val_56`, a BatchNorm fused into the Conv before it, equal biases merged into one). So the export keeps
the translated graph with its weights left out, referenced by name (`capture`); new weights are put
back by those names and the same optimizer runs again (`reweight`). What comes out is what a full
export of the new weights makes; whatever differs from the last export's graph, apart from its weight
values, is a reason for a full export (`NotWeightsOnly`).

Imported by trtbuild.frontends.pytorch and trtbuild.steps.reweight inside functions: torch loads only
in worker processes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

WEIGHTS = "(weights by name)"  # the external-data location a template's weights refer to


class NotWeightsOnly(Exception):
    """Why new weights cannot go into the last export's graph: a full export is needed."""


@contextlib.contextmanager
def capture(template: Path):
    """Write the graph the dynamo exporter translated, before its optimizer runs, to `template`:
    the weights (the exported program's state_dict) as references by name, other constants as they are."""
    from torch.onnx._internal.exporter import _onnx_program

    original = _onnx_program.ONNXProgram.optimize

    def optimize(program):
        if program.exported_program is not None and not template.exists():
            template.write_bytes(_without_weights(program.model, set(program.exported_program.state_dict)))
        return original(program)

    _onnx_program.ONNXProgram.optimize = optimize
    try:
        yield
    finally:
        _onnx_program.ONNXProgram.optimize = original


def _without_weights(model, names: set[str]) -> bytes:
    import onnx_ir as ir

    kept = {}
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if name in names and tensor is not None:
            kept[name] = tensor
            value.const_value = ir.ExternalTensor(WEIGHTS, 0, tensor.nbytes, tensor.dtype, shape=tensor.shape, name=name,
                                                  base_dir="")
    try:
        return ir.serde.serialize_model(model).SerializeToString()
    finally:
        for name, tensor in kept.items():
            model.graph.initializers[name].const_value = tensor


def reweight(template: Path, exported: Path, state: dict[str, torch.Tensor], out: Path) -> dict:
    """Write to `out` the last export (`exported`, its ONNX model) with the weights in `state` (the model's
    state_dict, by the names the exporter kept in `template`), optimized as a full export optimizes them.
    Raises NotWeightsOnly when the weights do not fit the graph or the optimizer makes another graph."""
    import onnx
    import onnx_ir as ir
    from torch.onnx._internal.exporter._core import TorchTensor
    from torch.onnx._internal.exporter._onnx_program import ONNXProgram

    proto = onnx.load(str(template), load_external_data=False)
    model = ir.serde.deserialize_model(proto)
    replaced = 0
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if not isinstance(tensor, ir.ExternalTensor) or tensor.location != WEIGHTS:
            continue
        new = state.get(name)
        if new is None:
            raise NotWeightsOnly(f"the model has no weight {name!r} now (the last export had one)")
        if list(new.shape) != list(tensor.shape) or TorchTensor(new).dtype != tensor.dtype:
            raise NotWeightsOnly(f"weight {name!r} is {_described(new.shape, TorchTensor(new).dtype)} now, "
                                 f"{_described(tensor.shape, tensor.dtype)} in the last export")
        value.const_value = TorchTensor(new.detach().contiguous(), name=name)
        replaced += 1
    program = ONNXProgram(model, None)
    program.optimize()  # the optimizer a full export runs, on the same graph with the new weights
    _into(program.model, exported, out)
    return {"weights": replaced}


def _described(shape, dtype) -> str:
    return f"{list(shape)} {str(dtype).rpartition('.')[2].lower()}"


def _into(optimized, exported: Path, out: Path) -> None:
    """The last export's model with each initializer's value taken from `optimized`, position by position.
    The optimizer runs in the same order on the same graph, so the two list the same initializers; those
    it names itself ("val_232") may be numbered differently, the rest keep the weights' names. The graph's
    own names (the exporter renames inputs, outputs and dims after optimizing) stay as they are."""
    import onnx
    import onnx_ir as ir

    from trtbuild.models.onnx_io import save_onnx

    final = onnx.load(str(exported))
    new = ir.serde.serialize_model(optimized)
    old_names = [init.name for init in final.graph.initializer]
    new_names = [init.name for init in new.graph.initializer]
    named = [(a, b) for a, b in zip(old_names, new_names) if a != b and not (_generated(a) and _generated(b))]
    if len(old_names) != len(new_names) or named:
        extra, missing = sorted(set(new_names) - set(old_names)), sorted(set(old_names) - set(new_names))
        raise NotWeightsOnly("the optimizer made other initializers from the new weights than from the last ones "
                             f"({_few(extra, 'new')}{'; ' if extra and missing else ''}{_few(missing, 'gone')}): "
                             "weights it merged or folded differ")
    if [n.op_type for n in final.graph.node] != [n.op_type for n in new.graph.node]:
        raise NotWeightsOnly("the optimizer made another graph from the new weights than from the last ones")
    if _constants(final) != _constants(new):
        raise NotWeightsOnly("the optimizer folded other values into Constant nodes than in the last export")
    for i, (init, tensor) in enumerate(zip(final.graph.initializer, new.graph.initializer)):
        if list(tensor.dims) != list(init.dims) or tensor.data_type != init.data_type:
            raise NotWeightsOnly(f"initializer {init.name!r} is {list(tensor.dims)} now, {list(init.dims)} in the "
                                 "last export")
        tensor.name = init.name
        final.graph.initializer[i].CopyFrom(tensor)
    save_onnx(final, out)


def _generated(name: str) -> bool:
    """A name the exporter or optimizer numbered itself ("val_232"), not a weight's."""
    return name.startswith("val_") and name[4:].isdigit()


def _constants(model) -> list[bytes]:
    return [b"".join(a.SerializeToString() for a in n.attribute) for n in model.graph.node if n.op_type == "Constant"]


def _few(names: list[str], what: str) -> str:
    if not names:
        return ""
    return f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
