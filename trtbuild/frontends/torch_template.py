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
import json
from pathlib import Path

import torch

from trtbuild.frontends import torch_direct

WEIGHTS = "(weights by name)"  # the external-data location a template's weights refer to


class NotWeightsOnly(Exception):
    """Why new weights cannot go into the last export's graph: a full export is needed."""


@contextlib.contextmanager
def capture(template: Path):
    """Write the graph the dynamo exporter translated, before its optimizer runs, to `template`:
    the weights (the exported program's state_dict) as references by name, other constants as they are,
    and how the optimized graph's constants come from the weights (torch_direct)."""
    from torch.onnx._internal.exporter import _onnx_program

    original = _onnx_program.ONNXProgram.optimize

    def optimize(program):
        if program.exported_program is None or template.exists():
            return original(program)
        proto, weights = _without_weights(program.model, set(program.exported_program.state_dict))
        before = torch_direct.Before(program.model.graph, set(weights))
        original(program)
        try:
            proof = torch_direct.prove(before, weights, program.model)
            if "moved" in proof:
                proof = torch_direct.checked_moves(proto, proof["moved"], weights, program.model) or proof
        except Exception as exc:  # no proof: a rebuild runs the optimizer again
            proof = {"why": f"no mapping of the constants to the weights ({type(exc).__name__}: {exc})"}
        proto.metadata_props.add(key=torch_direct.KEY, value=json.dumps(proof))
        template.write_bytes(proto.SerializeToString())

    _onnx_program.ONNXProgram.optimize = optimize
    try:
        yield
    finally:
        _onnx_program.ONNXProgram.optimize = original


def _without_weights(model, names: set[str]):
    """The model as a proto with its weights as references by name, and those weights (name -> tensor)."""
    import onnx_ir as ir

    kept = {}
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if name in names and tensor is not None:
            kept[name] = tensor
            value.const_value = ir.ExternalTensor(WEIGHTS, 0, tensor.nbytes, tensor.dtype, shape=tensor.shape, name=name,
                                                  base_dir="")
    try:
        return ir.serde.serialize_model(model), kept
    finally:
        for name, tensor in kept.items():
            model.graph.initializers[name].const_value = tensor


def reweight(template: Path, exported: Path, state: dict[str, torch.Tensor], out: Path) -> dict:
    """Write to `out` the last export (`exported`, its ONNX model) with the weights in `state` (the model's
    state_dict, by the names the exporter kept in `template`): copied in by name where the export proved
    that exact (torch_direct), else optimized as a full export optimizes them. Raises NotWeightsOnly when
    the weights do not fit the graph or the optimizer makes another graph.
    Returns {"weights": how many, "swap": "direct" or "optimizer: why the direct copy does not do"}."""
    import onnx

    proto = onnx.load(str(template), load_external_data=False)
    new = _new_weights(proto, state)
    proof = torch_direct.read(proto)
    why = proof.get("why", "")
    if not why:
        try:  # the exporter's modules (onnxscript, onnx_ir) are not even imported on this path
            torch_direct.swap(proto, proof, exported, {n: _array(t) for n, t in new.items()}, out)
            return {"weights": len(new), "swap": "direct"}
        except (torch_direct.NotExact, NotWeightsOnly) as exc:
            why = str(exc)
        except Exception as exc:  # whatever failed there, the optimizer's way remains
            why = f"the copy by name failed ({type(exc).__name__}: {exc})"
    _optimized(proto, new, exported, out)
    return {"weights": len(new), "swap": f"optimizer: {why}"}


# torch dtype -> ONNX TensorProto data type, and the ml_dtypes name of those numpy lacks
_ONNX_TYPES = {torch.float32: 1, torch.uint8: 2, torch.int8: 3, torch.uint16: 4, torch.int16: 5, torch.int32: 6,
               torch.int64: 7, torch.bool: 9, torch.float16: 10, torch.float64: 11, torch.uint32: 12, torch.uint64: 13,
               torch.complex64: 14, torch.complex128: 15, torch.bfloat16: 16, torch.float8_e4m3fn: 17,
               torch.float8_e4m3fnuz: 18, torch.float8_e5m2: 19, torch.float8_e5m2fnuz: 20}
_ML_DTYPES = {torch.bfloat16: "bfloat16", torch.float8_e4m3fn: "float8_e4m3fn", torch.float8_e4m3fnuz: "float8_e4m3fnuz",
              torch.float8_e5m2: "float8_e5m2", torch.float8_e5m2fnuz: "float8_e5m2fnuz"}


def _new_weights(proto, state: dict) -> dict:
    """The template's weights (name -> tensor) from `state`, each of the shape and dtype the graph has."""
    import onnx

    new = {}
    for init in proto.graph.initializer:
        if not any(e.key == "location" and e.value == WEIGHTS for e in init.external_data):
            continue
        tensor = state.get(init.name)
        if tensor is None:
            raise NotWeightsOnly(f"the model has no weight {init.name!r} now (the last export had one)")
        dtype = _ONNX_TYPES.get(tensor.dtype)
        if list(tensor.shape) != list(init.dims) or dtype != init.data_type:
            now = onnx.TensorProto.DataType.Name(dtype) if dtype else str(tensor.dtype)
            raise NotWeightsOnly(f"weight {init.name!r} is {_described(tensor.shape, now)} now, "
                                 f"{_described(init.dims, onnx.TensorProto.DataType.Name(init.data_type))} in the "
                                 "last export")
        new[init.name] = tensor.detach().contiguous()
    return new


def _array(tensor: torch.Tensor):
    """The tensor's values as a numpy array (ml_dtypes for bfloat16 and float8), sharing its memory."""
    name = _ML_DTYPES.get(tensor.dtype)
    if name is None:
        return tensor.numpy()
    import ml_dtypes

    return tensor.reshape(-1).view(torch.uint8).numpy().view(getattr(ml_dtypes, name)).reshape(tuple(tensor.shape))


def _optimized(proto, new: dict, exported: Path, out: Path) -> None:
    """The template with the new weights through the optimizer a full export runs, into the last export."""
    import onnx_ir as ir
    from torch.onnx._internal.exporter._core import TorchTensor
    from torch.onnx._internal.exporter._onnx_program import ONNXProgram

    model = ir.serde.deserialize_model(proto)
    for name, tensor in new.items():
        model.graph.initializers[name].const_value = TorchTensor(tensor, name=name)
    program = ONNXProgram(model, None)
    program.optimize()  # the optimizer a full export runs, on the same graph with the new weights
    _into(program.model, exported, out)


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
    values = list(optimized.graph.initializers.values())  # read from the graph: no second serialization
    old_names = [init.name for init in final.graph.initializer]
    new_names = [value.name for value in values]
    named = [(a, b) for a, b in zip(old_names, new_names) if a != b and not (_generated(a) and _generated(b))]
    if len(old_names) != len(new_names) or named:
        extra, missing = sorted(set(new_names) - set(old_names)), sorted(set(old_names) - set(new_names))
        raise NotWeightsOnly("the optimizer made other initializers from the new weights than from the last ones "
                             f"({_few(extra, 'new')}{'; ' if extra and missing else ''}{_few(missing, 'gone')}): "
                             "weights it merged or folded differ")
    if [n.op_type for n in final.graph.node] != [n.op_type for n in optimized.graph]:
        raise NotWeightsOnly("the optimizer made another graph from the new weights than from the last ones")
    constants = [ir.serde.serialize_node(n) for n in optimized.graph if n.op_type == "Constant"]
    if _constants(final.graph.node) != _constants(constants):
        raise NotWeightsOnly("the optimizer folded other values into Constant nodes than in the last export")
    for init, value in zip(final.graph.initializer, values):
        tensor = value.const_value
        if list(tensor.shape) != list(init.dims) or tensor.dtype != init.data_type:
            raise NotWeightsOnly(f"initializer {init.name!r} is {list(tensor.shape)} now, {list(init.dims)} in the "
                                 "last export")
        if init.HasField("raw_data"):
            init.raw_data = tensor.tobytes()
        else:  # values kept in typed fields: the tensor as the optimizer wrote it, under the last name
            name = init.name
            init.CopyFrom(ir.serde.serialize_tensor(tensor))
            init.name = name
    save_onnx(final, out)


def _generated(name: str) -> bool:
    """A name the exporter or optimizer numbered itself ("val_232"), not a weight's."""
    return name.startswith("val_") and name[4:].isdigit()


def _constants(nodes) -> list[bytes]:
    return [b"".join(a.SerializeToString() for a in n.attribute) for n in nodes if n.op_type == "Constant"]


def _few(names: list[str], what: str) -> str:
    if not names:
        return ""
    return f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
