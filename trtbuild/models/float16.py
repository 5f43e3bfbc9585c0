"""fp16 / bf16 conversion of an fp32 ONNX model, and the checks that the result is a valid model.

Converters, chosen by measurement on Hugging Face models exported by torch.onnx (bench/README.md):
onnxconverter-common leaves Cast nodes whose `to` disagrees with the value_info it rewrote (T5's relative
position buckets, Llama's rotary embedding: ONNX Runtime refuses to load the model) and hangs when asked
to keep Cast in fp32; onnxruntime.transformers' float16 converter, its maintained fork, makes valid
models of the same graphs and ships with ONNX Runtime. NVIDIA ModelOpt AutoCast is used where installed
(it also makes bf16)."""

from __future__ import annotations

import heapq
import re
from pathlib import Path

from trtbuild.errors import StepError, first_line

# Ops kept in fp32: what ONNX Runtime or TensorRT reject in fp16 (onnxconverter-common's list, with Resize,
# which onnxruntime's own list lacks: its fp16 form fails on ONNX Runtime's CPU kernels).
KEPT_IN_FP32 = (
    "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer", "FeatureVectorizer",
    "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor", "Normalizer", "OneHotEncoder",
    "RandomUniformLike", "SVMClassifier", "SVMRegressor", "Scaler", "TreeEnsembleClassifier",
    "TreeEnsembleRegressor", "TreeEnsemble", "ZipMap", "NonMaxSuppression", "TopK", "RoiAlign", "Resize", "Range",
    "CumSum", "Min", "Max", "Upsample",
)


def convert(source: Path, model, precision: str, converter: str, ops_to_keep: list[str], nodes_to_keep: list[str],
            keep_io: bool):
    """fp16 / bf16 with the converter's own list of ops that must stay fp32, plus keep_fp32's."""
    if converter == "modelopt":
        from modelopt.onnx.autocast import convert_to_mixed_precision

        return convert_to_mixed_precision(
            str(source), low_precision_type=precision, op_types_to_exclude=ops_to_keep,
            nodes_to_exclude=[f"^{re.escape(n)}$" for n in nodes_to_keep], keep_io_types=keep_io)
    from onnxruntime.transformers.float16 import convert_float_to_float16

    blocked = list(dict.fromkeys(KEPT_IN_FP32 + tuple(ops_to_keep)))
    converted = convert_float_to_float16(model, keep_io_types=keep_io, op_block_list=blocked,
                                         node_block_list=nodes_to_keep or None)
    drop_repeated_nodes(converted.graph)  # a Cast it inserts once per blocked reader of a constant (YOLOv8's Resize)
    topological_sort(converted.graph)  # it appends the Casts of graph inputs after their readers
    return converted


def drop_repeated_nodes(graph) -> None:
    """Keep the first of identical nodes (same everything, outputs included): a second one redefines
    its outputs, which ONNX forbids."""
    seen, kept = set(), []
    for node in graph.node:
        key = node.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def topological_sort(graph) -> None:
    """Order `graph`'s nodes so each comes after the nodes making its inputs (stable otherwise), as the
    ONNX standard asks. Names no node makes (inputs, weights, a subgraph's outer scope) are available."""
    made = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    waiting = {i: {made[name] for name in _reads(node) if name in made} for i, node in enumerate(graph.node)}
    readers: dict[int, list[int]] = {}
    for i, needs in waiting.items():
        for j in needs:
            readers.setdefault(j, []).append(i)
    ready = [i for i, needs in waiting.items() if not needs]  # a heap: the earliest ready node first
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in readers.get(i, ()):
            waiting[k].discard(i)
            if not waiting[k]:
                heapq.heappush(ready, k)
    if len(order) != len(graph.node):  # a cycle: leave the graph as it is, the checks name it
        return
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def _reads(node) -> set[str]:
    """Names a node reads: its inputs and those its subgraphs (If / Loop / Scan bodies) take from outside."""
    names = {n for n in node.input if n}
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            inner = {o for n in sub.node for o in n.output} | {i.name for i in sub.input} | {i.name for i in sub.initializer}
            names |= {n for sn in sub.node for n in _reads(sn) if n not in inner}
    return names


def validate(converted: Path, original: Path, precision: str) -> list[str]:
    """The converted model loads in ONNX Runtime (the accuracy gate's judge) and passes the ONNX checker
    where the original does. Raises StepError naming the node and the fix; returns warnings."""
    import onnx
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        onnxruntime.InferenceSession(str(converted), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if precision != "bf16":  # ONNX Runtime's CPU has no bf16 kernels: the gate runs bf16 its own way
            raise StepError(_invalid(converted, first_line(exc), precision)) from None
    try:
        onnx.checker.check_model(str(converted))
    except Exception as exc:
        try:
            onnx.checker.check_model(str(original))
        except Exception:
            return [f"onnx.checker: {first_line(exc)} (the fp32 model has the same kind of complaint)"]
        raise StepError(_invalid(converted, first_line(exc), precision)) from None
    return []


def _invalid(path: Path, error: str, precision: str) -> str:
    """What went wrong and what to do: keep the named node (or its op) in fp32, or use another converter."""
    import onnx

    node = re.search(r"of node \(([^)]*)\)|node: '?([^' ]+)'? ", error)
    name = next((g for g in node.groups() if g), None) if node else None
    op = next((n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node if n.name == name),
              None) if name else None
    keep = f"precision.keep_fp32: [{name}]" + (f" (or the op type: [{op}])" if op else "")
    fix = keep if name else "precision.keep_fp32 with the node or op type named above"
    return (f"the {precision} conversion made an invalid model: {error[:400]}. Keep that node in fp32 with {fix}, "
            "or install NVIDIA ModelOpt (pip install 'trtbuild[modelopt]'), whose AutoCast converter trtbuild then uses")
