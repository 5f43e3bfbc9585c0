"""One engine builder over the Python API that TensorRT >= 10 and TensorRT-RTX share.

Runs inside a worker process; the orchestrator never imports this module's backends.
"""

from __future__ import annotations

import importlib
import sys
import re
import time
from pathlib import Path

from trtbuild.errors import StepError
from trtbuild.store.hashing import HashedFile, write_hashed
from trtbuild.backends import backend
from trtbuild.backends.target import Target
from trtbuild.backends.weight_maps import WeightMaps

# Parser error codes that mean "TensorRT cannot import this op", with the advice to give.
_UNSUPPORTED_HINT = "TensorRT has no importer for this op: replace it in the model or provide a plugin"


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    target: Target,
    profiles: list[dict],
    workspace: int,
    optimization_level: int,
    timing_cache: Path | None,
    tf32: bool = False,
) -> dict:
    """Parse `onnx_path`, build a strongly typed engine for `target`, write it to `plan_path`; return metadata.

    `profiles`: the optimization profiles in index order, each {"name": str | None, "inputs": {INPUT: {"min",
    "opt", "max"}}}; static inputs need no entry."""
    # The external weights' maps outlive the parser, its network and the builder: all end with _build_engine.
    with WeightMaps(onnx_path) as weights:
        return _build_engine(weights, plan_path, target, profiles, workspace, optimization_level, timing_cache, tf32)


def _build_engine(weights: WeightMaps, plan_path: Path, target: Target, profiles: list[dict], workspace: int,
                  optimization_level: int, timing_cache: Path | None, tf32: bool) -> dict:
    kind = backend(target.backend)
    try:
        trt = importlib.import_module(kind.MODULE)
    except ImportError as exc:  # a farm node offering a backend it lacks, or a broken install
        raise StepError(f"{target.backend} cannot be imported on this machine ({exc}): {kind.INSTALL_HINT}, "
                        "or on a build farm node, offer only what `trtbuild ray-node` prints there") from None
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    # Never parse(bytes): external-data weight files beside the model are found by path.
    parsed = weights.parse(parser)
    errors = [_describe_parser_error(trt, parser.get_error(i)) for i in range(parser.num_errors)]
    if not parsed or errors:
        raise StepError("TensorRT could not parse the ONNX model:\n  " + "\n  ".join(errors or logger.errors or ["unknown error"]))
    if network.num_outputs == 0:
        raise StepError("TensorRT parsed an empty network (no outputs): is the file really an ONNX model?")

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    config = builder.create_builder_config()
    configure_builder(trt, config, workspace, optimization_level, tf32)
    kind.configure(trt, config, target.to_dict())
    added = add_profiles(builder, config, inputs, profiles)
    if added is None:
        profiles = []  # a network without dynamic inputs takes no profile

    use_timing_cache = timing_cache is not None and kind.TIMING_CACHE  # a no-op in TensorRT-RTX
    if use_timing_cache:
        from filelock import FileLock  # here: importing the engine step (a no-op build does) takes no lock

        lock = FileLock(str(timing_cache) + ".lock")
        with lock:
            data = timing_cache.read_bytes() if timing_cache.exists() else b""
        config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False)

    started = time.perf_counter()
    plan = _build_plan(trt, builder, network, config, plan_path)
    seconds = time.perf_counter() - started
    if plan is None:
        # cudaError 35 (no CUDA driver): the builder's probe on a machine without a GPU, beside the real error
        errors = [e for e in logger.errors if "cudaError 35" not in e] or logger.errors
        detail = "\n  ".join(errors) or "no details from TensorRT"
        turing = re.search(r"Cannot compile operation '([^']+)' for Turing \(SM75\): ([^.]+)", detail)
        if turing:  # TensorRT-RTX has no fp32 matrix multiply for sm_75
            raise StepError(f"TensorRT-RTX cannot build node {turing[1]!r} for Turing (sm_75): {turing[2]}; build "
                            f"sm_75 targets with engine.precision fp16, or leave sm75 out of the targets\n  {detail}")
        if "has no runners that implement it" in detail:  # parsed, but no kernel for it in this backend
            detail += ("\n  the backend has no implementation for that layer: export the model without it (NMS and "
                       "other post-processing run after the engine), or build for another backend")
        if "OutOfMemory" in detail:  # the builder sizes its requests by the limit it was given
            limit = f"{workspace >> 30}GiB" if workspace % 2**30 == 0 else f"{workspace >> 20}MiB"
            detail += (f"\n  the builder's workspace limit is engine.workspace: {limit}; raise it (a larger "
                       "profile, dynamic image sizes say, needs more)")
        raise StepError(f"TensorRT failed to build the engine:\n  {detail}")

    if use_timing_cache:
        from trtbuild.store.fsutil import atomic_write

        with lock:
            atomic_write(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))

    return {
        "backend": target.backend,
        "backend_version": trt.__version__,
        "target": target.id,
        "compute_capabilities": list(target.compute_capabilities) or "portable",
        "gpu_model": target.gpu_model or None,
        "runs_on": kind.runs_on(target),
        "inputs": [_tensor_info(t, profiles[0]["inputs"].get(t.name) if profiles else None) for t in inputs],
        "outputs": [_tensor_info(t) for t in outputs],
        "profiles": [{"index": i, "name": p["name"] or "default",
                      "inputs": {n: {k: list(s[k]) for k in ("min", "opt", "max")} for n, s in p["inputs"].items()
                                 if n in added}}
                     for i, p in enumerate(profiles)],
        "build_seconds": round(seconds, 3),
        "plan_bytes": plan_path.stat().st_size,
        "timing_cache": str(timing_cache) if use_timing_cache else None,
    }


def _build_plan(trt, builder, network, config, plan_path: Path) -> Path | None:
    """Build and write the plan to `plan_path`; None when the builder fails. Where the backend streams a plan
    out (build_serialized_network_to_stream: TensorRT >= 10.x, TensorRT-RTX), it goes to the file in pieces
    as it is serialized, hashed on the way, instead of being held whole in memory first (for a model of
    large weights, one copy of them less at the peak)."""
    if not hasattr(builder, "build_serialized_network_to_stream"):
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            return None
        write_hashed(plan_path, plan)
        return plan_path

    class _Writer(trt.IStreamWriter):
        def __init__(self, out: HashedFile):
            trt.IStreamWriter.__init__(self)
            self.out, self.error = out, None

        def write(self, data) -> int:
            try:
                return self.out.write(data)
            except OSError as exc:  # a full disk: the builder sees a short write and fails the build
                self.error = exc
                return 0

    try:
        with HashedFile(plan_path) as out:
            writer = _Writer(out)
            built = builder.build_serialized_network_to_stream(network, config, writer)
            if writer.error is not None:
                raise writer.error
            if not built or out.size == 0:
                raise _NoPlan
    except _NoPlan:
        return None
    return plan_path


class _NoPlan(Exception):
    """The builder made no plan (its log says why); what it streamed is removed."""


def configure_builder(trt, config, workspace: int, optimization_level: int, tf32: bool) -> None:
    """What every backend's builder gets: the workspace limit, the optimization level, and TF32 only when
    asked for (fp32 means fp32; other precisions come from the strongly typed graph)."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    config.builder_optimization_level = optimization_level
    (config.set_flag if tf32 else config.clear_flag)(trt.BuilderFlag.TF32)


def add_profiles(builder, config, inputs, profiles: list[dict]) -> list[str] | None:
    """One optimization profile per entry of `profiles`, in order; None when no input is dynamic (static
    networks take none), else the names of the dynamic inputs. A profile the backend refuses fails the step."""
    dynamic = [t.name for t in inputs if -1 in tuple(t.shape)]
    if not dynamic:
        return None
    for index, profile in enumerate(profiles):
        shapes = profile["inputs"]
        opt_profile = builder.create_optimization_profile()
        for tensor in inputs:
            if tensor.name in shapes:
                lo, mid, hi = (shapes[tensor.name][k] for k in ("min", "opt", "max"))
            elif -1 in tuple(tensor.shape):
                where = f"profile {index} ({profile['name']})" if profile["name"] else "the recipe"
                raise StepError(f"input {tensor.name!r} has dynamic dims {tuple(tensor.shape)}: give it min/opt/max "
                                f"in {where}", True)
            else:
                lo = mid = hi = list(tensor.shape)
            opt_profile.set_shape(tensor.name, lo, mid, hi)
        if config.add_optimization_profile(opt_profile) < 0:
            name = f" ({profile['name']})" if profile["name"] else ""
            raise StepError(f"TensorRT refused optimization profile {index}{name}: {shapes}", True)
    return dynamic


# TensorRT DataType names -> the dtype names recipes use.
_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
                "INT8": "int8", "UINT8": "uint8", "BOOL": "bool", "FP8": "float8", "INT4": "int4"}


def _tensor_info(tensor, shapes: dict | None = None) -> dict:
    """Name, dtype and shape; for a dynamic input, its min / opt / max in the first profile."""
    dtype = _DTYPE_NAMES.get(tensor.dtype.name, tensor.dtype.name.lower())
    info = {"name": tensor.name, "dtype": dtype, "shape": list(tensor.shape)}
    if shapes is not None and -1 in info["shape"]:
        info |= {k: list(shapes[k]) for k in ("min", "opt", "max")}
    return info


def _describe_parser_error(trt, error) -> str:
    node, op, desc = error.node_name(), error.node_operator(), error.desc().strip()
    if error.code() == trt.ErrorCode.UNSUPPORTED_NODE and desc in ("", "false"):
        desc = _UNSUPPORTED_HINT
    elif "Plugin not found" in desc:
        desc = f"no importer or plugin for op {op!r}; {_UNSUPPORTED_HINT}"
    where = f"node {node!r} ({op})" if (node or op) else "model"
    return f"{where}: {desc}"


def _make_logger(trt):
    class _Logger(trt.ILogger):
        """Forwards TensorRT's messages to the step log and keeps errors for the failure message."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(msg)
            if severity <= trt.ILogger.Severity.WARNING:
                print(f"[{trt.__name__}] {severity.name}: {msg}", file=sys.stderr, flush=True)

    return _Logger()
