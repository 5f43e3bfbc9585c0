"""Saving ONNX models the way the cache expects: one file when it fits in protobuf's 2 GB limit,
else weights in `<name>.data` beside it. Used in workers only."""

from __future__ import annotations

import os
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


def external_tensors(model) -> list:
    """The tensors of `model` (loaded without its external data) whose bytes live in another file."""
    import onnx

    return [t for t in tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]


def copy_model_files(source: Path, graph, output: Path, link: bool) -> None:
    """Write the model at `source` (`graph`: it loaded without its external data) as `output` plus
    `<output>.data`, the way save_onnx lays it out, without loading its weights: the files are linked
    (`link`: `source` is scratch this step may link from) or copied, a reflink where the file system
    has them; only tensors spread over several files are copied piece by piece. A model already laid
    out that way keeps its bytes, so the cache stores it as the same objects."""
    from trtbuild.store.fsutil import copy_file

    def place(src: Path, dest: Path) -> None:
        if link:
            try:
                os.link(src, dest)
                return
            except OSError:
                pass
        copy_file(src, dest)

    external = external_tensors(graph)
    data = output.with_name(f"{output.name}.data")
    where = {_external_field(t, "location") for t in external}
    if not external or (where == {f"{source.name}.data"} and source.name == output.name):
        place(source, output)
        if external:
            place(source.parent / f"{source.name}.data", data)
        return
    if len(where) == 1:  # one file: the same bytes under the new name
        place(source.parent / where.pop(), data)
    else:
        _gather(source.parent, external, data)
    for tensor in external:
        _set_external_field(tensor, "location", data.name)
    write_hashed(output, graph.SerializeToString())


def _gather(folder: Path, external: list, data: Path, chunk: int = 16 << 20) -> None:
    """Copy each external tensor's bytes into `data`, in pieces, and point the tensor there."""
    with open(data, "wb") as out:
        for tensor in external:
            offset, length = int(_external_field(tensor, "offset") or 0), _external_field(tensor, "length")
            with open(folder / _external_field(tensor, "location"), "rb") as src:
                src.seek(offset)
                start = out.tell()
                left = int(length) if length else -1
                while left:
                    piece = src.read(chunk if left < 0 else min(chunk, left))
                    if not piece:
                        break
                    out.write(piece)
                    left -= len(piece) if left > 0 else 0
                _set_external_field(tensor, "offset", str(start))
                _set_external_field(tensor, "length", str(out.tell() - start))
        out.flush()
        os.fsync(out.fileno())


def _external_field(tensor, key: str) -> str | None:
    return next((e.value for e in tensor.external_data if e.key == key), None)


def _set_external_field(tensor, key: str, value: str) -> None:
    for entry in tensor.external_data:
        if entry.key == key:
            entry.value = value
            return
    tensor.external_data.add(key=key, value=value)
