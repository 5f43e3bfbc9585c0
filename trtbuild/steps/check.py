"""check: the recipe matches the ONNX model; what else looks wrong in the model is a warning.

Never stricter than the engine builder: exporters and graph tools routinely leave things that
onnx.checker refuses and TensorRT accepts (outputs without a shape, an empty graph name, value_info
that strict shape inference disagrees with, a custom domain without an opset import). Those are
warnings here, kept in the report; the verdict on the model comes from the TensorRT parser, which
names the node and the op. This step refuses only what every backend refuses: a file that is not
an ONNX model, a model without outputs, and a recipe that does not describe the model.
"""

from __future__ import annotations

import json
from collections import Counter

from trtbuild.errors import StepError, first_line
from trtbuild.models.onnx_io import dims, dtype_name, runtime_inputs
from trtbuild.steps import Job, Reads

NAME = "check"
MAIN_OUTPUT = "io.json"
READS = Reads(params=("inputs", "backends"),
              files=("model",), context=("where",))
IMPORTS = ("onnx",)  # a spare worker loads these before this step comes
_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def tools(params: dict) -> tuple[str, ...]:
    from trtbuild.backends import backend

    return ("onnx", "numpy") + tuple(backend(b).DISTRIBUTION for b in params["backends"])  # their parsers judge the ops


def run(job: Job) -> dict:
    path = job.inputs["model"]
    model = _load(path)
    warnings = model_warnings(model, path)
    where = job.context["where"]
    model_inputs = {vi.name: vi for vi in runtime_inputs(model)}
    problems = []
    for name, spec in job.params["inputs"].items():
        at = where.get(f"inputs.{name}", where["recipe"])
        if name not in model_inputs:
            problems.append(f"{at}: inputs.{name}: the model has no input {name!r} "
                            f"(its inputs: {', '.join(model_inputs) or 'none'})")
            continue
        problems += _compare(name, spec, model_inputs[name], at)
    for name, vi in model_inputs.items():
        if name not in job.params["inputs"] and -1 in dims(vi):
            shape = dims(vi)
            example = [d if d > 0 else 1 for d in shape]
            problems.append(
                f"{where.get('inputs', where['recipe'])}: inputs: model input {name!r} has dynamic dims {shape}: "
                f"give their range, e.g. inputs: {{{name}: {{min: {example}, opt: {example}, max: {example}}}}}"
            )
    if problems:
        raise StepError("the recipe does not match the model:\n  " + "\n  ".join(problems), user_error=True)
    _refuse_foreign_ops(model)
    warnings += _backend_support(path, model, job.params["backends"])

    io = {
        "ir_version": model.ir_version,
        "opsets": {imp.domain or "ai.onnx": imp.version for imp in model.opset_import},
        "inputs": [_describe(vi) for vi in model_inputs.values()],
        "outputs": [_describe(vi) for vi in model.graph.output],
        "nodes": len(model.graph.node),
        "ops": sorted({node.op_type for node in model.graph.node}),
        "warnings": warnings,
    }
    (job.outdir / MAIN_OUTPUT).write_text(json.dumps(io, indent=2))
    return {"opset": io["opsets"].get("ai.onnx"), "inputs": [i["name"] for i in io["inputs"]],
            "outputs": [o["name"] for o in io["outputs"]], "nodes": io["nodes"], "ops": io["ops"],
            "warnings": warnings}


def _backend_support(path, model, backends: list[str]) -> list[str]:
    """Ask each backend's parser which nodes it cannot import: a failure naming each, and the fix, before
    any engine step. A node whose inputs are all constants is a warning (onnx-simplifier may fold it), and
    a custom op is left to the engine step (a plugin library may provide it there)."""
    from trtbuild.backends.support import fix_for, unbuildable_nodes, unsupported_nodes

    constant = {i.name for i in model.graph.initializer}
    constant |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    inputs_of = {n.name: [i for i in n.input if i] for n in model.graph.node}
    custom = {n.name for n in model.graph.node if n.domain not in _STANDARD_DOMAINS}
    refused, warnings = [], []
    by_op = {}
    for node in model.graph.node:
        by_op.setdefault((node.domain, node.op_type), []).append(node.name)
    domain_of = {n.name: n.domain for n in model.graph.node}
    for backend in backends:
        nodes = unsupported_nodes(path, backend)
        if nodes is None:
            warnings.append(f"{backend} could not be asked which ops it imports here; its engine step will tell")
            continue
        warnings += unbuildable_nodes(model, backend)
        # the parser stops at the first node of an op it cannot import: every node of that op is named
        nodes = [{**n, "node": name} for n in nodes
                 for name in by_op.get((domain_of.get(n["node"], ""), n["op"]), [n["node"]])]
        seen = set()
        for n in nodes:
            if (n["node"], n["op"]) in seen:
                continue
            seen.add((n["node"], n["op"]))
            line = f"node {n['node']!r} ({n['op']}): {backend} cannot import it ({n['reason'][:200]})"
            folded = n["node"] in inputs_of and all(i in constant for i in inputs_of[n["node"]])
            if n["node"] in custom:
                continue  # model_warnings names it
            if folded:
                warnings.append(line + "; its inputs are constants, which onnx-simplifier may fold")
            else:
                refused.append((backend, line, (n["node"], n["op"])))
    if refused:
        lines = [line for _, line, _ in refused]
        fixes = [f"{b}: {fix_for(b)}" for b in dict.fromkeys(b for b, _, _ in refused)]
        named = dict.fromkeys(node for _, _, node in refused)  # (name, op): once whatever the backends
        ops = Counter(op for _, op in named)
        # the first line stands alone (the run's recap shows it): what, how many, and the fix
        raise StepError(f"the engine backend cannot import {_count(len(named), 'node')} ({_ops(ops)}); fix: "
                        + "; ".join(fixes) + "\n  " + "\n  ".join(lines))
    return warnings


# tf2onnx keeps a TensorFlow op it has no conversion for, as is, in the ONNX domain
FOREIGN_FIX = ("these are ops the exporter could not convert (tf2onnx keeps a TensorFlow op it has no conversion for "
               "and lists it as 'Unsupported ops' in the export's log): replace them in the model with ops the "
               "exporter converts (tf.math.erfc(x) as 1 - tf.math.erf(x), say), or try a newer opset")


def _refuse_foreign_ops(model) -> None:
    """Nodes in the ONNX domain whose op ONNX does not define: no backend's parser imports them (TensorRT
    would look for a plugin of that name; an op named like one, `*_TRT`, is left to the engine step)."""
    import onnx

    foreign = [n for n in model.graph.node if n.domain in ("", "ai.onnx", "ai.onnx.ml")
               and not onnx.defs.has(n.op_type, n.domain if n.domain == "ai.onnx.ml" else "")
               and not n.op_type.endswith("_TRT")]
    if foreign:
        ops = Counter(n.op_type for n in foreign)
        lines = [f"node {n.name!r} ({n.op_type}): not an ONNX op" for n in foreign]
        raise StepError(f"the model holds {_count(len(foreign), 'node')} that no engine backend can import, not "
                        f"being ONNX ops ({_ops(ops)}); fix: {FOREIGN_FIX}\n  " + "\n  ".join(lines))


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _ops(ops: Counter) -> str:
    return ", ".join(op if n == 1 else f"{op} x{n}" for op, n in ops.items())


def _load(path):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise StepError(f"{path} is not a valid ONNX model: it does not parse as one ({first_line(exc)})") from None
    if not model.graph.output:
        raise StepError(f"{path} is not a valid ONNX model: its graph has no outputs (an empty or foreign file?)")
    return model


def model_warnings(model, path) -> list[str]:
    """What onnx.checker and strict shape inference refuse, and ops TensorRT needs a plugin for:
    reported, not enforced (the TensorRT parser is the judge)."""
    import onnx

    warnings = []
    # The checker reads the file itself, and shape inference gets the graph without its weights:
    # handing a 100 MB model to either from Python costs more than the check.
    for label, check in (("onnx.checker", lambda: onnx.checker.check_model(str(path))),
                         ("strict shape inference", lambda: onnx.shape_inference.infer_shapes(
                             _without_weights(model), check_type=True, strict_mode=True))):
        try:
            check()
        except Exception as exc:  # ValidationError, InferenceError, or whatever a broken model makes them raise
            warnings.append(f"{label}: {first_line(exc)}")
    custom = {(n.domain, n.op_type): n.name for n in model.graph.node if n.domain not in _STANDARD_DOMAINS}
    warnings += [f"node {name!r} ({op}, domain {domain!r}): a custom op; TensorRT builds it only with a plugin"
                 for (domain, op), name in sorted(custom.items())]
    return warnings


def _without_weights(model, keep_elements: int = 1024):
    """The model with each large initializer replaced by a graph input of its type and shape: shape
    inference needs the values of small ones only (shapes, axes, scales)."""
    import numpy as np
    from onnx import ModelProto, helper

    light = ModelProto()  # built field by field: copying the model would copy the weights this avoids
    light.ir_version, light.producer_name = model.ir_version, model.producer_name
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph, source = light.graph, model.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    graph.sparse_initializer.extend(source.sparse_initializer)
    listed = {i.name for i in source.input}
    for init in source.initializer:
        if int(np.prod(init.dims)) <= keep_elements:
            graph.initializer.append(init)
        elif init.name not in listed:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return light


def _compare(name: str, spec: dict, vi, at: str) -> list[str]:
    problems = []
    model_dtype = dtype_name(vi.type.tensor_type.elem_type)
    if spec["dtype"] is not None and spec["dtype"] != model_dtype:
        problems.append(f"{at}: inputs.{name}.dtype: recipe says {spec['dtype']}, the model has {model_dtype}")
    if not vi.type.tensor_type.HasField("shape"):
        return problems  # rank unknown: the recipe's shape stands
    model_dims = dims(vi)
    if len(model_dims) != len(spec["shape"]):
        problems.append(f"{at}: inputs.{name}.shape: recipe has rank {len(spec['shape'])}, "
                        f"the model {model_dims} has rank {len(model_dims)}")
        return problems
    for i, (model_dim, dim) in enumerate(zip(model_dims, spec["shape"])):
        if model_dim > 0 and dim != model_dim:
            says = "makes it dynamic" if dim == -1 else f"says {dim}"
            problems.append(f"{at}: inputs.{name}: dim {i} is fixed at {model_dim} in the model, the recipe {says}")
    return problems


def _describe(vi) -> dict:
    return {"name": vi.name, "dtype": dtype_name(vi.type.tensor_type.elem_type), "shape": dims(vi)}


AFTER = ("export",)
GATE = True  # an engine waits for it


def plan(p):
    """Always: the model (the recipe's ONNX file, or the export's) against the recipe, and the parser of
    each backend that builds here."""
    return p.step(NAME, {"inputs": p.read("dtype", "shape"),
                         "backends": sorted({t.backend for _, t, cannot_build in p.targets if cannot_build is None})},
                  {"model": p.model}, context={"where": p.where()})
