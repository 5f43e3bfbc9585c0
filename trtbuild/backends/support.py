"""Which nodes of an ONNX model a backend's parser cannot import, asked before any engine is built
(the parser's supports_model_v2: it partitions the graph and reports every node it has no importer for).

Runs inside a worker process; the orchestrator never imports a backend."""

from __future__ import annotations

import importlib
from pathlib import Path

from trtbuild.backends import backend as backend_named

# What to do about a node the backend cannot import, by backend.
FIXES = {
    "tensorrt-rtx": "TensorRT-RTX has no importer or plugin for it: export the model without it (detectors: without "
                    "NMS / post-processing, e.g. ultralytics export(nms=False), and do that part after the engine), "
                    "or build for full TensorRT (targets: [tensorrt]), whose plugins cover more ops",
    "tensorrt": "TensorRT has no importer for it: export the model without it, or provide a plugin",
}

# Ops a backend's parser takes while its builder has no implementation for them: TensorRT-RTX 1.7.1 parses
# NonMaxSuppression, then fails the build ("... has no runners that implement it"; bench/README.md).
PARSED_NOT_BUILT = {"tensorrt-rtx": ("NonMaxSuppression",)}


def unbuildable_nodes(model, backend: str) -> list[str]:
    """Warnings for nodes whose op `backend` parses but (as measured) cannot build."""
    ops = PARSED_NOT_BUILT.get(backend, ())
    return [f"node {n.name!r} ({n.op_type}): {backend} parses it but its builder has no implementation for it, so "
            f"the engine step will likely fail: {fix_for(backend)}" for n in model.graph.node if n.op_type in ops]


def fix_for(backend: str) -> str:
    return FIXES.get(backend, f"{backend} has no importer for it: export the model without it, or provide a plugin")


def unsupported_nodes(onnx_path: Path, backend: str) -> list[dict] | None:
    """[{"node", "op", "reason"}] for each node `backend`'s parser cannot import; None when the backend
    cannot be imported here or has no supports_model_v2 (the engine step's parse then judges)."""
    try:
        trt = importlib.import_module(backend_named(backend).MODULE)
    except ImportError:
        return None
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)  # the errors come back through the parser
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not hasattr(parser, "supports_model_v2"):
        return None
    if parser.supports_model_v2(Path(onnx_path).read_bytes(), str(onnx_path)):
        return []
    found = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        if error.code() == trt.ErrorCode.UNSUPPORTED_NODE:
            reason = error.desc().strip().splitlines()[0] if error.desc().strip() else "no importer"
            if reason.startswith("Assertion failed:"):  # "Assertion failed: <condition>: <what it means>"
                reason = reason.rsplit(": ", 1)[-1]
            found.append({"node": error.node_name(), "op": error.node_operator(), "reason": reason})
    return found
