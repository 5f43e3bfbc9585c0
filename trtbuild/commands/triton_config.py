"""What a Triton model folder holds for one recipe's plans: config.pbtxt and the version folder's files.

Triton's TensorRT backend (platform tensorrt_plan) is built on full TensorRT: it loads full-TensorRT
plans, chosen per GPU by `cc_model_filenames`, and never TensorRT-RTX plans. So:

- full-TensorRT plans: platform tensorrt_plan, one file per compute capability in cc_model_filenames
  and no model.plan (Triton's default file name), so a GPU with no plan of its own fails to load the
  model instead of being handed another GPU's plan;
- TensorRT-RTX plans: a Python-backend model (trtbuild/commands/triton_rtx_model.py) that runs them
  with the TensorRT-RTX runtime, choosing the plan per GPU from plans.json and refusing a GPU none
  runs on (Hopper; an fp8 plan on a GPU before 8.9).

One model holds the plans of one backend: a recipe with both asks for --backend.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from trtbuild.backends import backend as backend_module
from trtbuild.errors import StepError, UsageError

# Recipe / engine dtype names -> Triton's DataType.
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64",
                "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
RTX_MODEL = Path(__file__).with_name("triton_rtx_model.py")


def model_files(name: str, plans: list[tuple[dict, Path]], backend: str | None = None) -> tuple[str, dict]:
    """(config.pbtxt text, {file name in the version folder: plan Path, or the file's bytes})."""
    backends = sorted({meta["backend"] for meta, _ in plans})
    if backend:
        plans = [(m, p) for m, p in plans if m["backend"] == backend]
    elif len(backends) > 1:
        raise UsageError(f"{name}: plans of {' and '.join(backends)}: a Triton model serves one backend's plans "
                         "(Triton's TensorRT backend loads full-TensorRT plans; TensorRT-RTX plans run in its Python "
                         "backend); choose one with --backend")
    if not plans:
        raise UsageError(f"{name}: no {backend} plan built")
    first = plans[0][0]
    for meta, _ in plans[1:]:
        if (meta["inputs"], meta["outputs"], meta.get("profiles"), meta.get("precision")) != (
                first["inputs"], first["outputs"], first.get("profiles"), first.get("precision")):
            raise UsageError(f"{name}: the plans of {first['target']} and {meta['target']} differ in inputs, outputs, "
                             "profiles or precision: build them from one recipe")
    platform = getattr(backend_module(first["backend"]), "TRITON_PLATFORM", None)
    if platform == "tensorrt_plan":  # Triton's TensorRT backend loads them
        return _tensorrt_model(name, plans)
    if platform == "python":  # a Python-backend model runs them with the backend's own runtime
        return _rtx_model(name, plans)
    raise UsageError(f"{name}: Triton has no backend for {first['backend']} plans")


def _arch(caps: list[str]) -> str:
    return "-".join("sm" + cc.replace(".", "") for cc in caps)


def _tensorrt_model(name: str, plans: list[tuple[dict, Path]]) -> tuple[str, dict]:
    tied = [meta["target"] for meta, _ in plans if meta.get("gpu_model")]
    if tied:
        raise UsageError(f"{name}: {', '.join(tied)} run only on the GPU model that built them (this TensorRT has no "
                         "same-compute-capability build), and Triton chooses a plan by compute capability alone: "
                         "build them with a TensorRT that offers it (10.x on sm_80 or newer)")
    files, by_cc = {}, {}
    for meta, plan in plans:
        file = f"model.{_arch(meta['compute_capabilities'])}.plan"
        files[file] = plan
        by_cc.setdefault(meta["compute_capabilities"][0], file)
    return config_text(name, plans[0][0], platform="tensorrt_plan", by_cc=by_cc), files


def _rtx_model(name: str, plans: list[tuple[dict, Path]]) -> tuple[str, dict]:
    files, by_cc = {}, {}
    # The most specific plan serves a compute capability: sm86 before sm86+sm120.
    for meta, plan in sorted(plans, key=lambda mp: 1000 if mp[0]["compute_capabilities"] == "portable"
                             else len(mp[0]["compute_capabilities"])):
        caps = meta["compute_capabilities"]
        file = "model.portable.plan" if caps == "portable" else f"model.{_arch(caps)}.plan"
        files[file] = plan
        for cc in (["portable"] if caps == "portable" else caps):
            by_cc.setdefault(cc, file)
    first = plans[0][0]
    choice = {"backend": first["backend"], "backend_version": first["backend_version"],
              "precision": first.get("precision"), "plans": by_cc, "profiles": first.get("profiles") or [],
              "outputs": [t["name"] for t in first["outputs"]]}
    files["plans.json"] = (json.dumps(choice, indent=2, sort_keys=True) + "\n").encode()
    files["model.py"] = RTX_MODEL.read_bytes()
    return config_text(name, first, backend="python"), files


def config_text(name: str, meta: dict, platform: str | None = None, backend: str | None = None,
                by_cc: dict[str, str] | None = None) -> str:
    """Triton's model configuration (protobuf text format) for an engine described by `meta` (model.json)."""
    profiles = meta.get("profiles") or []
    batch = max_batch_size(meta)
    lines = [f'name: "{name}"', f'platform: "{platform}"' if platform else f'backend: "{backend}"',
             f"max_batch_size: {batch}"]
    for kind, tensors in (("input", meta["inputs"]), ("output", meta["outputs"])):
        for tensor in tensors:
            dtype = TRITON_TYPES.get(tensor["dtype"])
            if dtype is None:
                raise UsageError(f"{name}: {kind} {tensor['name']!r} has type {tensor['dtype']}, which Triton "
                                 f"cannot exchange ({', '.join(TRITON_TYPES)})")
            dims = tensor["shape"][1:] if batch else tensor["shape"]
            lines += [f"{kind} {{", f'  name: "{tensor["name"]}"', f"  data_type: {dtype}",
                      f"  dims: [ {', '.join(map(str, dims))} ]", "}"]
    # The TensorRT backend gives each profile an instance group; the Python model picks one per request.
    groups = [(p["name"], str(p["index"])) for p in profiles] if len(profiles) > 1 and platform else [(None, None)]
    for group, profile in groups:
        lines += ["instance_group {"] + ([f'  name: "{name}_{group}"'] if group else []) + [
            "  kind: KIND_GPU", "  count: 1"] + ([f'  profile: "{profile}"'] if profile else []) + ["}"]
    for cc, file in sorted((by_cc or {}).items(), key=lambda kv: tuple(map(int, kv[0].split(".")))):
        lines += ["cc_model_filenames {", f'  key: "{cc}"', f'  value: "{file}"', "}"]
    text = "\n".join(lines) + "\n"
    check_config(text)
    return text


def max_batch_size(meta: dict) -> int:
    """Triton batches along dim 0 when every input and output has a dynamic dim 0 that every profile lets
    start at 1: then the largest batch every profile takes, else 0 (dims given whole)."""
    profiles = meta.get("profiles") or []
    tensors = meta["inputs"] + meta["outputs"]
    if not profiles or any(not t["shape"] or t["shape"][0] != -1 for t in tensors):
        return 0
    ranges = [shapes for p in profiles for shapes in p["inputs"].values()]
    if not ranges or any(r["min"][0] != 1 for r in ranges):
        return 0
    return min(r["max"][0] for r in ranges)


def check_config(text: str) -> None:
    """Parse `text` with Triton's own model_config.proto when the tritonclient package is installed: a config
    it refuses is a bug here, never written."""
    config_class = triton_model_config()
    if config_class is None:
        return
    from google.protobuf import text_format

    try:
        text_format.Parse(text, config_class())
    except text_format.ParseError as exc:
        raise StepError(f"the Triton model configuration does not parse with Triton's model_config.proto: {exc}\n{text}")


def triton_model_config():
    """Triton's ModelConfig message class, from the tritonclient package's generated model_config_pb2 (read
    from its file: the package's grpc module needs extras that only its network client uses), or None."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    if not source.is_file():
        return None
    loader_spec = importlib.util.spec_from_file_location("trtbuild_triton_model_config_pb2", source)
    module = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # a protobuf runtime this generated code refuses
        raise UsageError(f"tritonclient's model_config_pb2 does not load here ({exc}); uninstall tritonclient to "
                         "write the configuration unchecked, or install a protobuf it accepts") from None
    return module.ModelConfig
