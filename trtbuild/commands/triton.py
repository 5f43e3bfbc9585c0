"""`trtbuild triton`: a Triton Inference Server model repository from what is built (never builds).

For each recipe, REPOSITORY/<name>/config.pbtxt (platform tensorrt_plan, the engine's inputs and outputs,
max_batch_size from the profiles, one instance group per optimization profile, cc_model_filenames
mapping each compute capability to its plan, default_model_filename the portable plan) and
REPOSITORY/<name>/<version>/ with the plans. A folder whose files are already those is left alone, so a
server polling the repository reloads nothing; otherwise the version folder is written beside it and
renamed into place, and config.pbtxt replaced atomically.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from pathlib import Path

from trtbuild.errors import EXIT_OK, StepError, UsageError
from trtbuild.store.hashing import digest_file

# Recipe / engine dtype names -> Triton's DataType.
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64",
                "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}


def cmd_triton(args) -> int:
    from trtbuild.commands.build import compile_recipes
    from trtbuild.execution.progress import Progress
    from trtbuild.execution.runner import Runner
    from trtbuild.store.cache import Cache

    cache = Cache(args.cache_dir)
    backend, args.backend, args.target = args.backend, None, None  # --backend picks plans, not targets
    steps, problems = compile_recipes(args, cache)
    if problems:
        raise UsageError("\n".join(problems))
    with open(os.devnull, "w") as devnull:
        results = Runner(cache, Progress(stream=devnull, quiet=True), dry_run=True).run(steps)
    models: dict[str, list[tuple[dict, Path]]] = {}
    missing = []
    for result in results:
        step = result.step
        if step.name != "engine" or backend not in (None, step.target.backend):
            continue
        recipe = step.recipe.recipe.name
        plan = result.record and result.record["outputs"].get("model.plan")
        if plan is None or not cache.verified(plan["digest"]):
            why = result.reason if result.status != "cached" else "its plan is missing from the cache"
            missing.append(f"{recipe} [{step.target.id}]: not built ({why})")
            continue
        models.setdefault(recipe, []).append((result.record["meta"], cache.object_path(plan["digest"])))
    if missing:
        raise StepError("the repository needs every target's plan; build them first (`trtbuild "
                        f"{' '.join(args.recipes)}`):\n  " + "\n  ".join(missing))
    for name, plans in models.items():
        folder = args.repository / name
        changed = write_model(folder, name, plans, args.version, backend)
        print(f"{'wrote' if changed else 'unchanged'}  {folder}")
    return EXIT_OK


def model_files(name: str, plans: list[tuple[dict, Path]], backend: str | None = None) -> tuple[str, dict[str, Path]]:
    """(config.pbtxt text, {file name in the version folder: plan}) for one recipe's plans."""
    backends = sorted({meta["backend"] for meta, _ in plans})
    if backend:
        plans = [(m, p) for m, p in plans if m["backend"] == backend]
    elif len(backends) > 1:  # Triton loads a model's plans with one TensorRT
        raise UsageError(f"{name}: plans of {' and '.join(backends)}: a Triton model's plans load with one TensorRT; "
                         "choose one with --backend")
    if not plans:
        raise UsageError(f"{name}: no {backend} plan built")
    first = plans[0][0]
    for meta, _ in plans[1:]:
        if (meta["inputs"], meta["outputs"], meta.get("profiles")) != (first["inputs"], first["outputs"],
                                                                       first.get("profiles")):
            raise UsageError(f"{name}: the plans of {first['target']} and {meta['target']} differ in inputs, outputs "
                             "or profiles: build them from one recipe")
    files, default, by_cc = {}, None, {}
    # The most specific plan serves a compute capability: sm86 before sm86+sm120.
    for meta, plan in sorted(plans, key=lambda mp: _width(mp[0])):
        caps = meta["compute_capabilities"]
        if caps == "portable":
            default = files_name = "model.plan"
        else:
            files_name = f"model.{meta['backend']}.{'-'.join('sm' + cc.replace('.', '') for cc in caps)}.plan" \
                if meta["backend"] != "tensorrt-rtx" else f"model.{'-'.join('sm' + cc.replace('.', '') for cc in caps)}.plan"
            for cc in caps:
                by_cc.setdefault(cc, files_name)
        files[files_name] = plan
    return config_text(name, first, by_cc, default), files


def _width(meta: dict) -> int:
    caps = meta["compute_capabilities"]
    return 1000 if caps == "portable" else len(caps)


def config_text(name: str, meta: dict, by_cc: dict[str, str], default: str | None) -> str:
    """Triton's model configuration (protobuf text format) for an engine described by `meta` (model.json)."""
    profiles = meta.get("profiles") or []
    batch = max_batch_size(meta)
    lines = [f'name: "{name}"', 'platform: "tensorrt_plan"', f"max_batch_size: {batch}"]
    for kind, tensors in (("input", meta["inputs"]), ("output", meta["outputs"])):
        for tensor in tensors:
            dtype = TRITON_TYPES.get(tensor["dtype"])
            if dtype is None:
                raise UsageError(f"{name}: {kind} {tensor['name']!r} has type {tensor['dtype']}, which Triton's "
                                 f"TensorRT backend cannot exchange ({', '.join(TRITON_TYPES)})")
            dims = tensor["shape"][1:] if batch else tensor["shape"]
            lines += [f"{kind} {{", f'  name: "{tensor["name"]}"', f"  data_type: {dtype}",
                      f"  dims: [ {', '.join(map(str, dims))} ]", "}"]
    groups = [(p["name"], str(p["index"])) for p in profiles] if len(profiles) > 1 else [(None, None)]
    for group, profile in groups:
        lines += ["instance_group {"] + ([f'  name: "{name}_{group}"'] if group else []) + [
            "  kind: KIND_GPU", "  count: 1"] + ([f'  profile: "{profile}"'] if profile else []) + ["}"]
    if default:
        lines.append(f'default_model_filename: "{default}"')
    for cc, file in sorted(by_cc.items(), key=lambda kv: tuple(map(int, kv[0].split(".")))):
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


def write_model(folder: Path, name: str, plans: list[tuple[dict, Path]], version: int, backend: str | None) -> bool:
    """Make `folder` hold config.pbtxt and <version>/ with the plans; False when it already did."""
    from trtbuild.store.fsutil import atomic_write

    config, files = model_files(name, plans, backend)
    target = folder / str(version)
    if _holds(folder, config, target, files):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{version}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        staging.mkdir()
        for file, plan in files.items():
            shutil.copyfile(plan, staging / file)
        if target.exists():  # the old version folder leaves in one rename, the new one arrives in another
            retired = folder / f".{version}.{uuid.uuid4().hex[:12]}.old"
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write(folder / "config.pbtxt", config.encode())
    return True


def _holds(folder: Path, config: str, target: Path, files: dict[str, Path]) -> bool:
    try:
        if (folder / "config.pbtxt").read_text() != config:
            return False
        present = {p.name for p in target.iterdir()}
    except OSError:
        return False
    return present == set(files) and all(digest_file(target / f) == digest_file(plan) for f, plan in files.items())
