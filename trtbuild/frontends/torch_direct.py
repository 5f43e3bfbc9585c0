"""New weights straight into the last exported model, without the exporter's optimizer, where that is exact.

The optimizer (trtbuild.frontends.torch_template) turns the exporter's graph into the final one; some of
its initializers are the weights as they are ("model.fc.weight"), others it computed: constants that
depend on no weight (shapes, scalars), weights moved by an exact data-movement op (a Linear's weight
transposed into `val_56`, a Gather of a position table), or weights changed by arithmetic (a BatchNorm
fused into the Conv before it, which keeps the Conv weight's name). When the export runs, `prove`
compares the graph before the optimizer with the one after and records how each final constant comes
from the weights; a rebuild (`swap`) then copies the new weights into the last model.onnx by name and
recomputes the moved ones, bit for bit what the optimizer would write. Anything else (a value the
optimizer changed by arithmetic, one whose origin is unknown) is recorded as the reason to run the
optimizer again.

Works on onnx_ir graphs at export time and on ONNX protos at rebuild time; imported inside functions.
"""

from __future__ import annotations

import json

KEY = "trtbuild.weights_swap"  # the template's metadata: {"direct": [...], "moved": [...]} or {"why": ...}
EXACT = frozenset({"Transpose", "Gather", "GatherElements", "Expand", "Reshape", "Squeeze", "Unsqueeze", "Slice",
                   "Concat", "Identity", "Flatten", "Constant", "Shape", "Size", "Cast", "CastLike"})  # no arithmetic
# (op, input index) that take integers as shapes or axes: a constant used only there decides no output value
SHAPE_INPUTS = frozenset({("Reshape", 1), ("Expand", 1), ("Unsqueeze", 1), ("Squeeze", 1), ("Tile", 1),
                          ("ConstantOfShape", 0), ("Split", 1), ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4),
                          ("ReduceMean", 1), ("ReduceSum", 1), ("ReduceMax", 1), ("ReduceMin", 1)})

# (op, input index) that read only a value's dtype or shape, which new weights of the same shapes keep
TYPE_ONLY = frozenset({("CastLike", 1), ("Shape", 0), ("Size", 0)})


class Before:
    """What the graph before the optimizer says: the values that depend on a weight, and each value's producer."""

    def __init__(self, graph, weights: set[str]):
        self.names = set(graph.initializers) | {v.name for n in graph for v in n.outputs}
        self.tainted = set(weights)
        self.inputs_of: dict[str, list[str]] = {}  # a value -> its producer's inputs
        self.read_by: dict[str, list[str]] = {w: [] for w in weights}  # a weight -> the first output of each reader
        self.subgraphs = False
        for node in graph:
            if any(a.type.name in ("GRAPH", "GRAPHS") for a in node.attributes.values()):
                self.subgraphs = True  # If / Loop bodies may read weights from the outer scope: not followed
            names = [v.name if v is not None else "" for v in node.inputs]
            for out in node.outputs:
                self.inputs_of[out.name] = names
            read = [n for i, n in enumerate(names) if n in self.tainted and (node.op_type, i) not in TYPE_ONLY]
            for name in read:
                if name in self.read_by and node.outputs:
                    self.read_by[name].append(node.outputs[0].name)
            if read:
                self.tainted.update(v.name for v in node.outputs)

    def cone(self, names: list[str]) -> set[str]:
        """`names` and every value they are computed from."""
        found, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name and name not in found:
                found.add(name)
                todo.extend(self.inputs_of.get(name, ()))
        return found


def prove(before: Before, weights: dict, optimized) -> dict:
    """{"direct": [final initializers that are a weight unchanged], "moved": [final initializers a weight
    moved by exact ops]} when every other final constant depends on no weight; else {"why": ...}."""
    if before.subgraphs:
        return {"why": "the graph has subgraphs (If / Loop), whose reads of weights are not followed"}
    graph = optimized.graph
    direct, moved = [], []
    constants = [(name, v) for name, v in graph.initializers.items()]
    constants += [(n.outputs[0].name, n.outputs[0]) for n in graph if n.op_type == "Constant" and n.domain == ""]
    for name, value in constants:
        tensor = value.const_value
        if name in weights:
            if value.is_initializer() and tensor is not None and _same(tensor, weights[name]):
                direct.append(name)
                continue
            return {"why": f"the optimizer changed weight {name!r} (a weight fused into another, such as a "
                           "BatchNorm into the Conv before it)"}
        if name not in before.names:
            if _shape_only(value):
                continue
            return {"why": f"the optimizer made constant {name!r}, whose origin is not in the exported graph"}
        if name in before.tainted:
            if not value.is_initializer():
                return {"why": f"the optimizer folded weights into Constant node {name!r}"}
            moved.append(name)
    return _vanished(before, weights, direct, moved, graph) or {"direct": direct, "moved": moved}


def _vanished(before: Before, weights: dict, direct: list[str], moved: list[str], graph) -> dict:
    """{"why": ...} when a weight is read in fewer places after the optimizer than before, other than by
    the moved values: the optimizer put another value in its place (equal weights merged into one) or
    removed an operation on it (an Add of a zero bias), choices made on the old weights' values."""
    folded = before.cone(moved)
    for name in weights:
        readers = [r for r in before.read_by.get(name, []) if r not in folded]
        uses = len(graph.initializers[name].uses()) if name in direct else 0
        if uses < len(readers):
            return {"why": f"the optimizer took weight {name!r} out of {len(readers) - uses} of its places in "
                           "the graph (equal weights merged into one, or an operation on it removed for its values)"}
    return {}


def _same(tensor, weight) -> bool:
    return tensor is weight or (tensor.dtype == weight.dtype and list(tensor.shape) == list(weight.shape)
                                and tensor.tobytes() == weight.tobytes())


def _shape_only(value) -> bool:
    """An integer constant that every consumer takes as a shape or axes: no output value depends on it
    beyond the shapes, which new weights of the same shapes leave as they are."""
    tensor = value.const_value
    if tensor is None or not tensor.dtype.is_integer():
        return False
    return all((node.op_type, index) in SHAPE_INPUTS for node, index in value.uses())


def checked_moves(template_proto, moved: list[str], weights: dict, optimized) -> dict:
    """The proof with each moved value recomputed from the old weights and compared with what the optimizer
    wrote: a move is kept only where the two are equal, bit for bit."""
    if not moved:
        return {}
    try:
        values = recompute(template_proto, moved, {n: t.numpy() for n, t in weights.items()})
    except NotExact as exc:
        return {"why": str(exc)}
    for name in moved:
        if values[name].tobytes() != optimized.graph.initializers[name].const_value.tobytes():
            return {"why": f"recomputing {name!r} from the weights does not give what the optimizer wrote"}
    return {}


class NotExact(Exception):
    pass


def recompute(template, names: list[str], weights: dict) -> dict:
    """`names` (values of the graph before the optimizer) computed from `weights` (numpy arrays by name)
    with ONNX's reference evaluator, over the ops in EXACT only."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    graph = template.graph
    producer = {out: node for node in graph.node for out in node.output}
    inits = {i.name: i for i in graph.initializer}
    nodes, feeds, seen, todo = [], {}, set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in weights:
            feeds[name] = weights[name]
        elif name in inits:
            feeds[name] = onnx.numpy_helper.to_array(inits[name])
        elif name in producer:
            node = producer[name]
            if node.op_type not in EXACT or node.domain not in ("", "ai.onnx"):
                raise NotExact(f"{name!r} comes from the weights through {node.op_type}, which computes")
            nodes.append(node)
            todo.extend(node.input)
        else:
            raise NotExact(f"{name!r} depends on a graph input")
    order = {id(n): i for i, n in enumerate(graph.node)}
    nodes = sorted({id(n): n for n in nodes}.values(), key=lambda n: order[id(n)])
    inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in feeds.items()]
    outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in names]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "moved", inputs, outputs),
                                   opset_imports=list(template.opset_import))
    found = ReferenceEvaluator(model).run(None, feeds)
    return dict(zip(names, found))


def swap(template, proof: dict, exported, new: dict, out) -> int:
    """Write to `out` the last export (`exported`, its ONNX model) with the new weights (`new`: name ->
    numpy array, checked against the template's shapes and dtypes) copied in by name and the moved ones
    recomputed. Returns how many initializers changed."""
    import onnx

    from trtbuild.models.onnx_io import save_onnx

    final = onnx.load(str(exported))
    values = {name: new[name] for name in proof["direct"]}
    if proof["moved"]:
        values |= recompute(template, proof["moved"], new)
    inits = {init.name: init for init in final.graph.initializer}
    for name, array in values.items():
        init = inits.get(name)
        if init is None or not init.HasField("raw_data") or list(init.dims) != list(array.shape):
            from trtbuild.frontends.torch_template import NotWeightsOnly

            raise NotWeightsOnly(f"initializer {name!r} of the last export does not take the new value as it is")
        init.raw_data = array.tobytes()
    save_onnx(final, out)
    return len(values)


def read(template) -> dict:
    """The proof recorded in the template, or {"why": ...} for a template made before proofs were kept."""
    for prop in template.metadata_props:
        if prop.key == KEY:
            return json.loads(prop.value)
    return {"why": "the last export recorded no mapping of its constants to the weights"}
