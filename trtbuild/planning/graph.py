"""Recipe -> DAG of steps; step keys; why a step must run.

A step's key hashes its kind and implementation version, canonical parameters, the digests of
its input files, the versions of the tools it calls and, for an engine, its target. Inputs
produced by another step are identified by that step's output digests, so a step whose upstream
reran but produced identical bytes stays cached (early cutoff).
"""

from __future__ import annotations

import contextlib
import functools
import os
import gc
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from trtbuild.store.cache import Cache
from trtbuild.errors import RecipeError, UsageError
from trtbuild.store.hashing import digest_json
from trtbuild.recipes.loader import QUANTIZED_PRECISIONS, LoadedRecipe
from trtbuild.frontends import DEFAULT_OPSET, require
from trtbuild.backends.gpu import remember_in
from trtbuild.planning.sources import (distribution_of, glob_files, module_file, onnx_files, package_folder,
                                       tree_files, user_imports)
from trtbuild.steps import load_kind
from trtbuild.steps.action import code_version, keyed_env, tool_version
from trtbuild.steps.export import ONNX_FILES
from trtbuild.backends.target import Target, cannot_run_here, cuda_device, resolve_target, supports_fp8


# Precisions made by transforming the ONNX model (fp32 / tf32 are builder settings).
TRANSFORMED_PRECISIONS = ("fp16", "bf16", "int8", "fp8")
# What steps that run the model once, at each input's opt shape, read of the input specs.
AT_OPT = ("dtype", "shape", "opt")
DEFAULT_MAX_RELATIVE_ERROR = {"tf32": 0.01, "fp16": 0.01, "bf16": 0.05, "int8": 0.1, "fp8": 0.15}


@dataclass(frozen=True)
class SourceFiles:
    """Files from the user's tree; `main` is what the step opens (the others sit beside it). In a key,
    `main` is "(main)" and the others are named relative to its folder when `beside_main`, else
    relative to the recipe's project (stable_root)."""

    main: Path
    files: tuple[Path, ...]
    beside_main: bool = True


@dataclass(frozen=True, eq=False)
class Pick:
    """Some outputs of a step as another step's input: only they are handed over and hashed."""

    step: Step
    names: tuple[str, ...]

    def select(self, outputs: dict) -> dict:
        return {name: obj for name, obj in outputs.items() if name in self.names}


@dataclass(eq=False)
class Step:
    recipe: LoadedRecipe
    name: str
    kind: ModuleType
    params: dict
    inputs: dict[str, SourceFiles | Step | Pick]  # hashed into the key
    publish_dir: Path  # relative to the cache's out/ directory
    target: Target | None = None
    context: dict = field(default_factory=dict)  # handed to the worker, not part of the key
    after: list[Step] = field(default_factory=list)  # gates: must succeed first, not part of the key
    skip_reason: str | None = None  # set when this machine cannot run the step (e.g. no suitable GPU)

    def __post_init__(self):
        self.kind.READS.check(self.kind.NAME, self.params, self.inputs, self.context)

    @property
    def id(self) -> str:
        return self.name if self.target is None else f"{self.name}@{self.target.id}"

    @property
    def label(self) -> str:
        return f"{self.recipe.recipe.name}/{self.name}"

    @functools.cached_property
    def deps(self) -> list[Step]:
        """The steps this one waits for; fixed once made (the runner asks several times per step)."""
        return [producer(i) for i in self.inputs.values() if isinstance(i, (Step, Pick))] + self.after


class ThisMachine:
    """Which targets this machine builds and runs, and on which GPU: what a step's context and skip
    reason say. A cluster executor answers the same questions for its nodes (trtbuild.execution.farm)."""

    resolve = staticmethod(resolve_target)

    @staticmethod
    def builder(target: Target) -> dict:
        return cuda_device(target) if target.backend == "tensorrt" else {}  # TensorRT-RTX builds without one

    @staticmethod
    def runner(target: Target, precision: str) -> tuple[dict, str | None]:
        return cuda_device(target, precision), cannot_run_here(target, precision)


@contextlib.contextmanager
def no_collection():
    """While recipes compile: the plan is many small objects that all live on, which the cyclic
    collector would scan again and again and never free (a tenth of a no-op build of 1000 recipes)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def compile_recipe(loaded: LoadedRecipe, cache: Cache, backend: str | None = None,
                   targets: list[str] | None = None, machine=ThisMachine) -> list[Step]:
    """The steps of one recipe in dependency order:
    [export -> check -> parity ->] simplify -> [precision -> accuracy ->] engine -> verify
    (export and parity for framework sources; precision and accuracy for fp16 / bf16 / int8 / fp8)."""
    remember_in(cache.root / "gpus.json")  # NVML once per GPU set, not once per run
    recipe = loaded.recipe
    out = Path(recipe.name)
    # PyTorch models carry no input types; the other sources' types come from the model when not set.
    default_dtype = "float32" if recipe.source.framework == "pytorch" else None
    inputs = {name: _input_params(spec, default_dtype) for name, spec in recipe.inputs.items()}
    steps: list[Step] = []

    parity_data = {"data": _files([loaded.resolve(recipe.parity.data)])} if recipe.parity.data else {}
    export = None
    if recipe.source.framework == "onnx":
        model: SourceFiles | Step | Pick = _files(onnx_files(loaded.source_path(), cache.stat_cache, loaded.where(
            "source", "path"), recipe.source.allow_outside_files))
    else:
        export = _export_step(loaded, inputs, out, parity_data, cache)
        steps.append(export)
        model = Pick(export, ONNX_FILES)  # not reference.npz: float noise there must not rebuild anything

    check = Step(
        loaded, "check", load_kind("check"), {"inputs": _read(inputs, "dtype", "shape")}, {"model": model}, out,
        context={"where": _where(loaded)},
    )
    steps.append(check)
    gates = [check]
    if export is not None and recipe.parity.enabled:
        params = {"atol": recipe.parity.atol, "rtol": recipe.parity.rtol, "framework": recipe.source.framework,
                  "inputs_from": recipe.parity.data or f"random, seed {recipe.parity.seed}"}
        parity = Step(loaded, "parity", load_kind("parity"), params, {"onnx": export}, out, after=[check])
        steps.append(parity)
        gates.append(parity)
    if recipe.onnx.simplify:
        # Gated on check only: with -j it runs beside parity; the engine waits for both.
        simplify = Step(loaded, "simplify", load_kind("simplify"),
                        {"inputs": _read(inputs, *AT_OPT), "check": recipe.onnx.simplify_check}, {"model": model},
                        out, after=[check])
        steps.append(simplify)
        model = simplify
    fp32_model = model
    # Lossy precisions are judged by relative L2 error against fp32, in the gate and in verify.
    limit = recipe.precision.max_relative_error or DEFAULT_MAX_RELATIVE_ERROR.get(recipe.engine.precision)
    if recipe.engine.precision in TRANSFORMED_PRECISIONS:
        precision = _precision_step(loaded, _read(inputs, *AT_OPT), model, out, cache, after=[check])
        accuracy = Step(loaded, "accuracy", load_kind("accuracy"),
                        {"inputs": _read(inputs, *AT_OPT), "precision": recipe.engine.precision,
                         "max_relative_error": limit,
                         "seed": recipe.parity.seed},
                        {"fp32": model, "model": precision} | parity_data, out / recipe.engine.precision, after=[check])
        steps += [precision, accuracy]
        gates.append(accuracy)
        model = precision
    # --target beats --backend beats the recipe's targets beats engine.backend.
    for spec in targets or ([backend] if backend else None) or recipe.targets or [recipe.engine.backend]:
        target, cannot_build = machine.resolve(spec)
        if recipe.engine.precision == "fp8":
            cannot_build = cannot_build or _fp8_unsupported(loaded, spec, target)
        engine_params = {
            "inputs": inputs,
            "precision": recipe.engine.precision,
            "workspace": int(recipe.engine.workspace),
            "optimization_level": recipe.engine.optimization_level,
            "target": target.to_dict(),
        }
        runs_on, cannot_run = machine.runner(target, recipe.engine.precision)
        engine = Step(loaded, "engine", load_kind("engine"), engine_params, {"model": model}, out / target.id, target,
                      context={"timing_cache": str(cache.timing / f"{target.id}.cache")} | machine.builder(target),
                      after=list(gates),
                      skip_reason=cannot_build)
        verify_params = {"inputs": _read(inputs, *AT_OPT), "target": target.to_dict(), "atol": recipe.parity.atol,
                         "rtol": recipe.parity.rtol, "max_relative_error": limit, "seed": recipe.parity.seed}
        verify = Step(loaded, "verify", load_kind("verify"), verify_params,
                      {"plan": Pick(engine, ("model.plan",)), "onnx": fp32_model} | parity_data, out / target.id, target,
                      context=runs_on, skip_reason=cannot_build or cannot_run)
        steps += [engine, verify]
    return steps


def _fp8_unsupported(loaded: LoadedRecipe, spec: str, target: Target) -> str | None:
    """fp8 needs sm_89 or newer: a recipe or --target naming an older SM is a mistake; an older local
    GPU (full TensorRT builds for the GPU it finds) only means this machine cannot build it."""
    older = [cc for cc in target.compute_capabilities if not supports_fp8(cc)]
    if not older:
        return None
    sms = ", ".join("sm_" + cc.replace(".", "") for cc in older)
    if ":" in spec:
        raise RecipeError([f"{loaded.where('engine', 'precision')}: engine.precision fp8 needs sm_89 or newer, but "
                           f"target {spec!r} includes {sms}; build fp8 for sm89 / sm120 targets only, or choose int8"])
    return f"fp8 engines need a GPU with sm_89 or newer (this machine's is {sms})"


def _precision_step(loaded: LoadedRecipe, inputs: dict, model, out: Path, cache: Cache, after: list[Step]) -> Step:
    recipe, options = loaded.recipe, loaded.recipe.precision
    precision = recipe.engine.precision
    files: dict[str, SourceFiles | Step | Pick] = {"model": model}
    context: dict = {}
    calibration = None
    if precision in QUANTIZED_PRECISIONS:
        converter = "ort-quantization"
        cal = options.calibration
        # The files a data glob resolves to are inputs (by content and path), not the glob's spelling.
        calibration = {"method": cal.method, "batches": cal.batches, "loader": cal.loader, "data": bool(cal.data)}
        if cal.data:
            found = sorted({p.resolve() for p in loaded.file.parent.glob(cal.data) if p.is_file()})
            files["calibration"] = SourceFiles(found[0], tuple(found), beside_main=False)  # named by path
            context["calibration_files"] = [str(p) for p in found]
            context["where"] = loaded.where("precision", "calibration", "data")
        else:
            search = [loaded.resolve(p) for p in recipe.source.python_path]
            loader = module_file(cal.loader.split(":")[0], search, "precision.calibration.loader")
            files["calibration"] = _files([loader, *user_imports(loader, search, cache.stat_cache)])
            context["python_path"] = [str(p) for p in search]
            context["where"] = loaded.where("precision", "calibration", "loader")
    else:
        converter = fp16_converter(precision)
    params = {"precision": precision, "converter": converter, "keep_io_types": options.keep_io_types,
              "keep_fp32": sorted(set(options.keep_fp32)), "calibration": calibration, "inputs": inputs}
    return Step(loaded, "precision", load_kind("precision"), params, files, out / precision, context=context,
                after=after)


def fp16_converter(precision: str) -> str:
    """ModelOpt AutoCast when installed (fp16 and bf16), else onnxconverter-common (fp16 only)."""
    if importlib.util.find_spec("modelopt") is not None:
        return "modelopt"
    if precision == "bf16":
        raise UsageError("engine.precision bf16 needs NVIDIA ModelOpt: pip install 'trtbuild[modelopt]'")
    if importlib.util.find_spec("onnxconverter_common") is None:
        raise UsageError("engine.precision fp16 needs a converter: pip install 'trtbuild[rtx]' (onnxconverter-common) "
                         "or 'trtbuild[modelopt]'")
    return "onnxconverter"


def _export_step(loaded: LoadedRecipe, inputs: dict, out: Path, parity_data: dict, cache: Cache) -> Step:
    recipe, source = loaded.recipe, loaded.recipe.source
    require(source.framework)
    search = [loaded.resolve(p) for p in source.python_path]
    files: dict[str, SourceFiles] = {}
    if source.path:
        files["model"] = _files(tree_files(loaded.source_path(), loaded.where("source", "path"), source.allow_outside_files),
                                main=loaded.source_path())
    if source.checkpoint:
        files["checkpoint"] = _files([loaded.resolve(source.checkpoint)])
    code, package = [], None
    if source.entrypoint:
        module = source.entrypoint.split(":")[0]
        code.append(module_file(module, search, "source.entrypoint"))
        package = distribution_of(module, code[0])
        if package is None:  # the user's code (or an editable install's): the modules it imports are inputs too
            code += user_imports(code[0], [*search, package_folder(module, code[0])], cache.stat_cache)
    code += glob_files(loaded.file.parent, source.deps)
    if code:
        files["code"] = _files(code)
    parity = recipe.parity
    if parity.enabled:
        files |= parity_data
    params = {
        "framework": source.framework, "opset": recipe.onnx.opset or DEFAULT_OPSET[source.framework],
        "inputs": _read(inputs, *AT_OPT),  # which dims are dynamic, not their range
        "entrypoint": source.entrypoint, "args": source.args, "kwargs": source.kwargs,
        "exporter": source.exporter if source.framework == "pytorch" else None,
        "package": package,  # its version goes into the key with the other tools
        "outputs": source.outputs, "inputs_as_nchw": source.inputs_as_nchw,
        "input_order": list(inputs),  # PyTorch binds a lone input, or a TorchScript model's, by position
        # the framework's outputs on the parity inputs are computed during export
        "reference": {"seed": parity.seed} if parity.enabled else None,
    }
    return Step(loaded, "export", load_kind("export"), params, files, out,
                context={"python_path": [str(p) for p in search], "where": _where(loaded)})


def _files(paths: list[Path], main: Path | None = None) -> SourceFiles:
    return SourceFiles(main or paths[0], tuple(paths))


def _input_params(spec, default_dtype: str | None) -> dict:
    lo, mid, hi = spec.profile()
    return {"dtype": spec.dtype or default_dtype, "shape": spec.dims, "min": lo, "opt": mid, "max": hi}


def _read(inputs: dict, *fields: str) -> dict:
    """The part of each input spec a step reads: only that goes into its key (a new max rebuilds the engine
    alone; a step that runs the model at its opt shape reruns when opt changes)."""
    return {name: {f: spec[f] for f in fields} for name, spec in inputs.items()}


def _where(loaded: LoadedRecipe) -> dict[str, str]:
    """`file:line` of the recipe values a step may blame, by dotted key ("recipe": the file itself)."""
    recipe = loaded.recipe
    keys = [("source",), *(("source", k) for k in recipe.source.given), ("inputs",),
            *(("inputs", n) for n in recipe.inputs), *(("inputs", n, "dtype") for n in recipe.inputs)]
    return {".".join(k): loaded.where(*k) for k in keys} | {"recipe": str(loaded.file)}


def key_components(step: Step, cache: Cache, upstream: dict[Step, dict]) -> dict:
    """Everything the step's output depends on. `upstream` maps each dependency to its action record."""
    inputs = source_digests(step, cache)
    for name, source in step.inputs.items():
        if isinstance(source, (Step, Pick)):
            outputs = upstream_outputs(source, upstream[producer(source)])
            inputs[name] = {out: o["digest"] for out, o in sorted(outputs.items())}
    return {
        "kind": step.kind.NAME,
        "version": code_version(step.kind.NAME),
        "params": step.params,
        "inputs": inputs,
        "tools": {dist: tool_version(dist) for dist in step.kind.tools(step.params)},
        "env": keyed_env(step.kind.READS.env),
    }


def source_digests(step: Step, cache: Cache) -> dict[str, dict[str, str]]:
    """The digests of the step's files from the user's tree, by input name and label. Taken for the key
    and again after the step ran: a file that moved in between fails the step, not the cache."""
    return {name: {label: cache.stat_cache.digest(f) for label, f in source_labels(step, source).items()}
            for name, source in step.inputs.items() if isinstance(source, SourceFiles)}


def source_labels(step: Step, source: SourceFiles) -> dict[str, Path]:
    """{label: file}: how each file is named in a key. Relative names (to the main file's folder, else
    to the recipe's project) let two checkouts of one repository share every key."""
    root = stable_root(step.recipe.file)
    labels = {}
    for file in source.files:
        if source.beside_main and file == source.main:
            labels["(main)"] = file
        elif source.beside_main and file.is_relative_to(source.main.parent):
            labels[str(file.relative_to(source.main.parent))] = file
        else:
            labels[portable(file, root)] = file
    return labels


def producer(source: Step | Pick) -> Step:
    """The step whose outputs `source` hands over."""
    return source.step if isinstance(source, Pick) else source


def upstream_outputs(source: Step | Pick, record: dict) -> dict:
    """The outputs of an upstream action record that `source` hands over."""
    return source.select(record["outputs"]) if isinstance(source, Pick) else record["outputs"]


def step_key(components: dict) -> str:
    return digest_json(components)


def explain(previous: dict | None, current: dict) -> str:
    """Why a step with no cached result must run, from the components of its last build."""
    if not previous:
        return "never built"
    changes = _diff(previous.get("components", {}), current)
    if not changes:
        if previous.get("status") == "failed":
            return "last attempt failed"
        return "cached result missing (cache cleaned?)"
    return "; ".join(changes[:4]) + (f" (+{len(changes) - 4} more)" if len(changes) > 4 else "")


def _diff(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                changes.append(f"{sub} added")
            elif key not in new:
                changes.append(f"{sub} removed")
            else:
                changes += _diff(old[key], new[key], sub)
        return changes
    if old == new:
        return []
    if path.startswith("inputs."):
        return [f"{path} changed ({str(old)[:8]} -> {str(new)[:8]})"]
    return [f"{path}: {_short(old)} -> {_short(new)}"]


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@functools.cache
def stable_root(recipe_file: Path) -> Path:
    """What paths of a recipe's files are recorded relative to: the git repository holding the recipe,
    else the recipe's folder (the same in every checkout, wherever it lies)."""
    folder = recipe_file.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def portable(file: Path | str, root: Path) -> str:
    """A file's name in keys and records: relative to `root` when inside it; outside, absolute when
    `root` is a repository (a dataset on another volume), else relative too (a project copied whole)."""
    file = Path(file)
    if file.is_relative_to(root):
        return str(file.relative_to(root))
    return str(file) if (root / ".git").exists() else os.path.relpath(file, root)
