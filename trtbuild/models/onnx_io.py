"""Saving ONNX models the way the cache expects: one file when it fits in protobuf's 2 GB limit,
else weights in `<name>.data` beside it. Used in workers only."""

from __future__ import annotations

from pathlib import Path

from trtbuild.store.hashing import write_hashed

_PROTOBUF_LIMIT = 2**31 - 1


def save_onnx(model, path: Path) -> None:
    import onnx

    data = _serialized(model)
    if data is not None:
        write_hashed(path, data)
    else:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{path.name}.data")


def _serialized(model) -> bytes | None:
    """The model's bytes when it fits in one file, else None. Serialized once: measuring a model
    (ByteSize) costs as much as serializing it."""
    from google.protobuf.message import EncodeError

    try:
        data = model.SerializeToString()
    except (EncodeError, ValueError):  # protobuf (upb) refuses to serialize, even to measure, over 2 GB
        return None
    return data if len(data) <= _PROTOBUF_LIMIT else None


def normalize_file(path: Path) -> None:
    """Rewrite an exporter's output (which may have scattered external-data files) with save_onnx."""
    import onnx

    before = {p for p in path.parent.iterdir() if p != path}
    model = onnx.load(str(path))  # pulls external data into memory
    for extra in before:
        extra.unlink()
    save_onnx(model, path)


def runtime_inputs(model) -> list:
    """The graph inputs fed at run time (old exporters also list initializers as inputs)."""
    initializers = {init.name for init in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in initializers]


def dims(value_info) -> list[int]:
    """Dims of a value's tensor type; symbolic or unknown dims are -1."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
            for d in value_info.type.tensor_type.shape.dim]


def dtype_name(elem_type: int) -> str:
    """An ONNX element type as recipes and numpy name it: float32, int64, bfloat16..."""
    import onnx

    if elem_type == onnx.TensorProto.BFLOAT16:
        return "bfloat16"
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, ValueError, TypeError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def complete_inputs(model, recipe_inputs: dict[str, dict]) -> dict[str, dict]:
    """Every runtime input of `model` (a ModelProto or a path) as {dtype, shape, min, opt, max}: the
    recipe's entry with the model's dtype where the recipe sets none, else the model's static shape.
    Inputs the recipe names that the model lacks are left for the check step to report."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    complete = {}
    for vi in runtime_inputs(model):
        dtype = dtype_name(vi.type.tensor_type.elem_type)
        spec = recipe_inputs.get(vi.name)
        if spec is None:
            shape = dims(vi)
            spec = {"dtype": None, "shape": shape, "min": shape, "opt": shape, "max": shape}
        complete[vi.name] = spec | {"dtype": spec["dtype"] or dtype}
    return complete


def tensors(graph):
    """Every tensor a graph holds: initializers and tensor attributes, subgraphs (If, Loop) included."""
    yield from graph.initializer
    yield from (sparse.values for sparse in graph.sparse_initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from tensors(attr.g)
            for sub in attr.graphs:
                yield from tensors(sub)


def weight_bytes(model) -> int:
    """The bytes of every constant tensor a model holds (initializers, Constant nodes, subgraphs'),
    from their shapes and types: nothing is read or copied."""
    import math

    import onnx

    total = 0
    for tensor in tensors(model.graph):
        try:
            size = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            size = 1
        total += math.prod(tensor.dims) * size
    return total
