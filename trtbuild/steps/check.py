"""check: the ONNX model is valid (onnx.checker, shape inference) and matches the recipe's inputs."""

from __future__ import annotations

import json

from trtbuild.errors import StepError
from trtbuild.steps import Job

NAME = "check"
VERSION = 1
MAIN_OUTPUT = "io.json"


def tools(params: dict) -> tuple[str, ...]:
    return ("onnx",)


_DTYPES = {
    "float32": "FLOAT", "float16": "FLOAT16", "bfloat16": "BFLOAT16", "int64": "INT64",
    "int32": "INT32", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL",
}


def run(job: Job) -> dict:
    import onnx

    path = job.inputs["model"]
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # the checker raises ValidationError, InferenceError or protobuf errors
        raise StepError(f"{path} is not a valid ONNX model: {_first_line(exc)}") from None
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    model_inputs = {vi.name: vi for vi in graph.input if vi.name not in initializers}

    problems = []
    for name, spec in job.params["inputs"].items():
        where = job.context["where"].get(name, "recipe")
        if name not in model_inputs:
            problems.append(f"{where}: inputs.{name}: the model has no input {name!r} (its inputs: {', '.join(model_inputs)})")
            continue
        problems += _compare(name, spec, model_inputs[name], where, onnx)
    for name, vi in model_inputs.items():
        if name not in job.params["inputs"] and any(d < 0 for d in _dims(vi)):
            problems.append(
                f"{job.context['recipe']}: inputs: model input {name!r} has dynamic dims {_dims(vi)}: add it with min/opt/max"
            )
    if problems:
        raise StepError("the recipe does not match the model:\n  " + "\n  ".join(problems), user_error=True)

    io = {
        "ir_version": model.ir_version,
        "opsets": {imp.domain or "ai.onnx": imp.version for imp in model.opset_import},
        "inputs": [_describe(vi, onnx) for vi in model_inputs.values()],
        "outputs": [_describe(vi, onnx) for vi in graph.output],
        "nodes": len(graph.node),
        "ops": sorted({node.op_type for node in graph.node}),
    }
    (job.outdir / "io.json").write_text(json.dumps(io, indent=2))
    return {"opset": io["opsets"].get("ai.onnx"), "inputs": [i["name"] for i in io["inputs"]],
            "outputs": [o["name"] for o in io["outputs"]], "nodes": io["nodes"], "ops": io["ops"]}


def _dims(vi) -> list[int]:
    """Dims of a value's tensor type; symbolic or unknown dims are -1."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]


def _compare(name: str, spec: dict, vi, where: str, onnx) -> list[str]:
    problems = []
    elem = onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type)
    if _DTYPES[spec["dtype"]] != elem:
        problems.append(f"{where}: inputs.{name}.dtype: recipe says {spec['dtype']}, the model has {elem.lower()}")
    if not vi.type.tensor_type.HasField("shape"):
        return problems
    dims = _dims(vi)
    if len(dims) != len(spec["shape"]):
        problems.append(f"{where}: inputs.{name}.shape: recipe has rank {len(spec['shape'])}, the model {dims} has rank {len(dims)}")
        return problems
    for i, (model_dim, lo, hi) in enumerate(zip(dims, spec["min"], spec["max"])):
        if model_dim > 0 and not lo == hi == model_dim:
            problems.append(f"{where}: inputs.{name}: dim {i} is fixed at {model_dim} in the model, the recipe allows {lo}..{hi}")
    return problems


def _describe(vi, onnx) -> dict:
    elem = onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()
    return {"name": vi.name, "dtype": elem, "shape": _dims(vi)}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
