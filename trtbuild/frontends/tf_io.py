"""What a TensorFlow or Keras model takes and gives, checked against the recipe before tf2onnx runs.

tf2onnx answers a wrong tensor name with an assertion failure, and its shape_override silently
replaces dims the model fixes; so names and shapes are checked here, each problem at file:line.
Shapes here are in the model's layout (NHWC for inputs the recipe lists in inputs_as_nchw);
None is a dynamic dim.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtbuild.errors import StepError
from trtbuild.frontends import ModelSpec

# Ops whose unconsumed outputs are not model outputs: inputs, constants, variables, bookkeeping.
_NOT_OUTPUTS = {"Placeholder", "PlaceholderWithDefault", "Const", "NoOp", "Assert", "VarHandleOp",
                "VariableV2", "Variable", "SaveV2", "RestoreV2"}
_LISTED = 10  # candidate names a message shows


@dataclass
class ModelInput:
    tensor: str  # the name tf2onnx takes: "input_1:0" in a graph, the input's name in a Keras model
    dtype: str
    dims: list[int | None] | None  # None: rank unknown


def fail(problems: list[str]) -> None:
    raise StepError("the recipe does not match the model:\n  " + "\n  ".join(problems), user_error=True)


def import_graph(graph_def):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return graph


def graph_io(graph, spec: ModelSpec) -> tuple[dict[str, ModelInput], list[str]]:
    """A frozen graph's inputs (the recipe's tensors, then every Placeholder the outputs still need)
    and outputs; names are tensor names ("input_1:0") in the recipe as in the ONNX model."""
    ops = graph.get_operations()
    placeholders = [op.outputs[0].name for op in ops if op.type == "Placeholder"]
    unconsumed = [t.name for op in ops if op.type not in _NOT_OUTPUTS for t in op.outputs if not t.consumers()]
    problems = []
    for n in spec.inputs:
        problems += _missing_tensor(graph, n, f"{spec.at(f'inputs.{n}')}: inputs.{n}",
                                    f"its placeholders: {_listing(placeholders)}")
    for n in spec.outputs:
        problems += _missing_tensor(graph, n, f"{spec.at('source.outputs')}: source.outputs",
                                    f"tensors nothing consumes: {_listing(unconsumed)}")
    if problems:
        fail(problems)
    needed = _placeholders_needed(graph, spec.outputs, stop=set(spec.inputs))
    names = list(spec.inputs) + [p for p in placeholders if p in needed and p not in spec.inputs]
    return {n: _describe(graph.get_tensor_by_name(n)) for n in names}, list(spec.outputs)


def _missing_tensor(graph, name: str, where: str, candidates: str) -> list[str]:
    try:
        graph.get_tensor_by_name(name)
        return []
    except (KeyError, ValueError):  # no such op; an op's name without ":<index>"; an index past its outputs
        pass
    try:
        op = graph.get_operation_by_name(name.split(":")[0])
    except (KeyError, ValueError):
        op = None
    if op is not None and op.outputs:
        return [f"{where}: the graph has no tensor {name!r}: did you mean {op.outputs[0].name!r}?"]
    return [f"{where}: the graph has no tensor {name!r} ({candidates})"]


def _placeholders_needed(graph, outputs: list[str], stop: set[str]) -> set[str]:
    """Placeholder tensors the outputs depend on when the graph is cut at the `stop` tensors."""
    stack = [graph.get_tensor_by_name(n).op for n in outputs if n not in stop]
    seen, found = set(), set()
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type == "Placeholder":
            found.add(op.outputs[0].name)
        stack += [t.op for t in op.inputs if t.name not in stop] + list(op.control_inputs)
    return found


def signature_io(graph, inputs: list[str], outputs: list[str], renames: dict[str, str],
                 spec: ModelSpec) -> tuple[dict[str, ModelInput], list[str]]:
    """A SavedModel's serving signature, as tf2onnx froze it: the recipe names inputs and outputs as
    the signature does ("images"), the frozen graph as tensors ("images:0")."""
    model_inputs = {renames[t]: _describe(graph.get_tensor_by_name(t)) for t in inputs}
    model_outputs = {renames[t]: t for t in outputs}
    problems = [_name_problem(n, model_inputs, f"{spec.at(f'inputs.{n}')}: inputs.{n}", "input")
                for n in spec.inputs if n not in model_inputs]
    problems += [_name_problem(n, model_outputs, f"{spec.at('source.outputs')}: source.outputs", "output")
                 for n in spec.outputs if n not in model_outputs]
    if problems:
        fail(problems)
    return model_inputs, [model_outputs[n] for n in spec.outputs or model_outputs]


def _name_problem(name: str, known: dict, where: str, kind: str) -> str:
    base = name.split(":")[0]
    if base in known:  # a graph tensor name ("images:0") for the signature's "images"
        return f"{where}: the serving signature has no {kind} {name!r}: did you mean {base!r}?"
    return f"{where}: the serving signature has no {kind} {name!r} (its {kind}s: {_listing(known)})"


# Keras 3 names a tensor "keras_tensor..." in the session that builds the model; the saved model's inputs
# carry their InputLayer's name ("input_layer" unless keras.Input(name=...) gave one)
_SESSION_NAME = (": 'keras_tensor...' is what model.inputs shows in the session that built the model, and it is not "
                 "saved; a loaded model's inputs are named after their InputLayer (model.layers[0].name, "
                 "'input_layer' unless keras.Input(name=...) named it)")


def keras_io(model, spec: ModelSpec) -> dict[str, ModelInput]:
    model_inputs = {}
    for t in model.inputs:
        name = t.name.split(":")[0]
        model_inputs[name] = ModelInput(name, getattr(t.dtype, "name", t.dtype), list(t.shape))
    problems = [f"{spec.at(f'inputs.{n}')}: inputs.{n}: the Keras model has no input {n!r} "
                f"(its inputs: {_listing(model_inputs)}){_SESSION_NAME if n.startswith('keras_tensor') else ''}"
                for n in spec.inputs if n not in model_inputs]
    if problems:
        fail(problems)
    return model_inputs


def _describe(tensor) -> ModelInput:
    dims = None if tensor.shape.rank is None else tensor.shape.as_list()
    return ModelInput(tensor.name, tensor.dtype.name, dims)


def _listing(names) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:_LISTED]) or "none"
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def export_shapes(spec: ModelSpec, inputs: dict[str, ModelInput], what: str) -> dict[str, list | None]:
    """Each model input's shape to export with: the model's dims where it fixes them (so the ONNX
    model keeps them), the recipe's where they are dynamic; None where neither knows the rank.
    Refuses what the model cannot take, and left-out inputs with dynamic dims."""
    problems, shapes = [], {}
    for name, model_input in inputs.items():
        dims = model_input.dims
        if name in spec.inputs:
            problems += _fit(spec, name, dims, what)
            recipe = _model_layout(spec, name, [None if d == -1 else d for d in spec.inputs[name]["shape"]])
            shapes[name] = recipe if dims is None else [r if m is None else m for m, r in zip(dims, recipe)]
        elif dims is None or None in dims:
            problems.append(_left_out_dynamic(spec, name, dims))
        else:
            shapes[name] = dims
    if problems:
        fail(problems)
    return shapes


def _fit(spec: ModelSpec, name: str, dims: list | None, what: str) -> list[str]:
    """Problems with the recipe's shape for input `name`, whose model dims are `dims`."""
    if dims is None:
        return []  # rank unknown: the recipe's shape stands
    at, given = spec.at(f"inputs.{name}"), spec.inputs[name]
    want, shape = given["shape"], _fmt(given["shape"])
    nchw = name in spec.inputs_as_nchw
    if len(dims) != len(want):
        return [f"{at}: inputs.{name}.shape: the recipe's {shape} has rank {len(want)}, "
                f"{what} {name!r} {_fmt(dims)} has rank {len(dims)}"]
    model = _to_nchw(dims) if nchw else dims  # in the recipe's layout
    bad = [i for i, m in enumerate(model) if m is not None and want[i] != m]
    if not bad:
        return []
    if all(want[i] == -1 for i in bad):  # a fixed dim the recipe lets vary: the check step's words
        return [f"{at}: inputs.{name}: dim {i} is fixed at {model[i]} in the model, the recipe makes it dynamic"
                for i in bad]
    if len(dims) == 4 and not nchw and _fits(_to_nchw(dims), want):
        return [f"{at}: inputs.{name}: shape {shape} is NCHW, {what} {name!r} is NHWC {_fmt(dims)}: "
                f"add `source: {{inputs_as_nchw: [{name}]}}` to export it as NCHW, "
                f"or give the NHWC shape {_fmt(_to_nhwc(given['shape']))}"]
    if nchw and _fits(dims, want):
        return [f"{at}: inputs.{name}: source.inputs_as_nchw lists {name!r}, but {what} {_fmt(dims)} already "
                f"has the recipe's layout {shape}: remove {name} from source.inputs_as_nchw"]
    layout = " (NHWC; the recipe's shape is NCHW, as source.inputs_as_nchw says)" if nchw else ""
    return [f"{at}: inputs.{name}: shape {shape} does not fit {what} {name!r}, which has shape {_fmt(dims)}{layout}"]


def _left_out_dynamic(spec: ModelSpec, name: str, dims: list | None) -> str:
    at = spec.at("inputs")
    if dims is None:
        return f"{at}: inputs: model input {name!r} has an unknown shape: add inputs.{name} with its shape"
    example = [1 if d is None else d for d in dims]
    return (f"{at}: inputs: model input {name!r} has dynamic dims {_fmt(dims)}: add inputs.{name} with "
            f"min/opt/max, e.g. inputs: {{{name!r}: {{min: {example}, opt: {example}, max: {example}}}}}")


def _model_layout(spec: ModelSpec, name: str, shape: list) -> list:
    return _to_nhwc(shape) if name in spec.inputs_as_nchw else shape


def _fits(dims: list, shape: list[int]) -> bool:
    return all(d is None or s in (-1, d) for d, s in zip(dims, shape))


def _to_nchw(dims: list) -> list:
    n, h, w, c = dims
    return [n, c, h, w]


def _to_nhwc(dims: list) -> list:
    n, c, h, w = dims
    return [n, h, w, c]


def _fmt(dims: list) -> str:
    """Dims as a recipe writes them: -1 for dynamic."""
    return "[" + ", ".join("-1" if d is None or d == -1 else str(d) for d in dims) + "]"
