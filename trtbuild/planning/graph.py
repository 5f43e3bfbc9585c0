"""Recipe -> DAG of steps: what each step reads and which steps it waits for (keys: planning.keys)."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from trtbuild.store.cache import Cache
from trtbuild.errors import RecipeError, UsageError
from trtbuild.recipes.loader import LoadedRecipe
from trtbuild.recipes.shared import QUANTIZED_PRECISIONS
from trtbuild.frontends.registry import framework as framework_of
from trtbuild.backends import backend as backend_module
from trtbuild.backends.gpu import remember_in
from trtbuild.planning.sources import (distribution_of, glob_files, module_file, onnx_files, package_folder,
                                       tree_files, user_imports)
from trtbuild.planning.profiles import engine_profiles, profile_opts, warn_uncalibrated, with_profile_ranges
from trtbuild.planning.profiles import ranges as shape_ranges
from trtbuild.steps import load_kind
from trtbuild.steps.export import ONNX_FILES
from trtbuild.steps.simplify import files_too_large
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
    relative to the recipe's project (trtbuild.planning.keys.project_root)."""

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
        # Fixed once made, and asked several times per step: plain attributes (a cached_property takes
        # a lock the first time, once per step of a thousand recipes).
        self.id: str = self.name if self.target is None else f"{self.name}@{self.target.id}"
        # The steps this one waits for.
        self.deps: list[Step] = [producer(i) for i in self.inputs.values() if isinstance(i, (Step, Pick))] + self.after

    @property
    def label(self) -> str:
        return f"{self.recipe.recipe.name}/{self.name}"


class ThisMachine:
    """Which targets this machine builds and runs, and on which GPU: what a step's context and skip
    reason say. A cluster executor answers the same questions for its nodes (trtbuild.execution.farm)."""

    resolve = staticmethod(resolve_target)

    @staticmethod
    def builder(target: Target) -> dict:
        return cuda_device(target) if backend_module(target.backend).BUILDS_ON_GPU else {}  # TensorRT-RTX builds without one

    @staticmethod
    def runner(target: Target, precision: str) -> tuple[dict, str | None]:
        return cuda_device(target, precision), cannot_run_here(target, precision)


@contextlib.contextmanager
def no_collection():
    """While recipes compile: the plan is many small objects that all live on, which the cyclic
    collector would scan again and again and never free (a tenth of a no-op build of 1000 recipes).
    Once compiled they are frozen (gc.freeze: left out of later collections while the run goes on);
    the command line unfreezes them when the command ends (trtbuild.commands.cli)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.freeze()
            gc.enable()


def compile_recipe(loaded: LoadedRecipe, cache: Cache, backend: str | None = None,
                   targets: list[str] | None = None, machine=ThisMachine) -> list[Step]:
    """The steps of one recipe in dependency order:
    [export -> check -> parity ->] simplify -> [precision -> accuracy ->] engine -> verify
    (export and parity for framework sources; precision and accuracy for fp16 / bf16 / int8 / fp8)."""
    remember_in(cache.mine and cache.mine / "gpus.json")  # NVML once per GPU set, not once per run
    recipe = loaded.recipe
    out = Path(recipe.name)
    # PyTorch models carry no input types; the other sources' types come from the model when not set.
    default_dtype = None if recipe.source.framework == "onnx" else framework_of(recipe.source.framework).input_dtype
    inputs = {name: _input_params(spec, default_dtype) for name, spec in recipe.inputs.items()}
    profiles = engine_profiles(recipe)
    if profiles:  # the steps that run the model once do so at the first profile's opt shapes
        inputs = with_profile_ranges(inputs, profiles, default_dtype)
    steps: list[Step] = []

    parity_data = {"data": _files([loaded.resolve(recipe.parity.data)])} if recipe.parity.data else {}
    export = None
    if recipe.source.framework == "onnx":
        model: SourceFiles | Step | Pick = _files(onnx_files(loaded.source_path(), cache.stat_cache, loaded.where(
            "source", "path"), recipe.source.allow_outside_files))
    else:
        export = _export_step(loaded, inputs, out, parity_data, cache, shape_ranges(inputs, profiles))
        steps.append(export)
        model = Pick(export, ONNX_FILES)  # not reference.npz: float noise there must not rebuild anything

    # --target beats --backend beats the recipe's targets beats engine.backend.
    resolved = [(spec, *_resolve(loaded, machine, spec, targets or backend))
                for spec in targets or ([backend] if backend else None) or recipe.targets or [recipe.engine.backend]]
    check = Step(
        loaded, "check", load_kind("check"),
        {"inputs": _read(inputs, "dtype", "shape"),
         "backends": sorted({t.backend for _, t, cannot_build in resolved if cannot_build is None})},
        {"model": model}, out, context={"where": _where(loaded)},
    )
    steps.append(check)
    gates = [check]
    if export is not None and recipe.parity.enabled:
        params = {"atol": recipe.parity.atol, "rtol": recipe.parity.rtol, "framework": recipe.source.framework,
                  "max_relative_error": recipe.parity.max_relative_error,
                  "outputs": {n: t.model_dump(exclude_none=True) for n, t in sorted(recipe.parity.outputs.items())},
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
        if isinstance(model, SourceFiles):  # an exported model's weights are judged by its simplify step
            try:
                simplify.skip_reason = files_too_large(model.files)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        if simplify.skip_reason is None:
            model = simplify
    fp32_model = model
    # Lossy precisions are judged by relative L2 error against fp32, in the gate and in verify.
    limit = recipe.precision.max_relative_error or DEFAULT_MAX_RELATIVE_ERROR.get(recipe.engine.precision)
    if recipe.engine.precision in TRANSFORMED_PRECISIONS:
        precision = _precision_step(loaded, _read(inputs, *AT_OPT), model, out, cache, after=[check],
                                    ranges=shape_ranges(inputs, profiles))
        accuracy = Step(loaded, "accuracy", load_kind("accuracy"),
                        {"inputs": _read(inputs, *AT_OPT), "precision": recipe.engine.precision,
                         "max_relative_error": limit,
                         "seed": recipe.parity.seed, "profiles": profile_opts(profiles),
                         "ranges": shape_ranges(inputs, profiles) if recipe.engine.precision in QUANTIZED_PRECISIONS
                         else None},
                        {"fp32": model, "model": precision} | parity_data, out / recipe.engine.precision, after=[check])
        steps += [precision, accuracy]
        gates.append(accuracy)
        model = Pick(precision, ONNX_FILES)  # not its calibration-shapes.json: the same model, the same engine
    for spec, target, cannot_build in resolved:
        if recipe.engine.precision == "fp8":
            cannot_build = cannot_build or _fp8_unsupported(loaded, spec, target)
        _refused_precision(loaded, spec, target)
        engine_params = {
            "inputs": inputs,
            "precision": recipe.engine.precision,
            "workspace": int(recipe.engine.workspace),
            "optimization_level": recipe.engine.optimization_level,
            "target": target.to_dict(),
            "profiles": profiles,  # None: one profile, the inputs' min / opt / max
        }
        runs_on, cannot_run = machine.runner(target, recipe.engine.precision)
        folder = out / target.id
        engine = Step(loaded, "engine", load_kind("engine"), engine_params, {"model": model}, folder, target,
                      context={"timing_cache": os.path.join(cache.timing, f"{target.id}.cache")}
                      | machine.builder(target),
                      after=list(gates),
                      skip_reason=cannot_build)
        verify_params = {"inputs": _read(inputs, *AT_OPT), "target": target.to_dict(), "atol": recipe.parity.atol,
                         "rtol": recipe.parity.rtol, "max_relative_error": limit, "seed": recipe.parity.seed,
                         "float_noise": recipe.parity.max_relative_error if limit is None else None,
                         "outputs": {} if limit is not None else
                         {n: t.model_dump(exclude_none=True) for n, t in sorted(recipe.parity.outputs.items())},
                         "profiles": profile_opts(profiles)}
        verify = Step(loaded, "verify", load_kind("verify"), verify_params,
                      {"plan": Pick(engine, ("model.plan",)), "onnx": fp32_model} | parity_data, folder, target,
                      context=runs_on, skip_reason=cannot_build or cannot_run)
        steps += [engine, verify]
    return steps


def _resolve(loaded: LoadedRecipe, machine, spec: str, from_command_line) -> tuple[Target, str | None]:
    """The target for `spec`; a recipe's own target that no backend takes is an error at its line."""
    try:
        return machine.resolve(spec)
    except UsageError as exc:
        targets = loaded.recipe.targets
        if from_command_line or spec not in targets:
            raise
        at = targets.index(spec)
        raise RecipeError([f"{loaded.where('targets', at)}: targets[{at}]: {exc}"]) from None


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


def _refused_precision(loaded: LoadedRecipe, spec: str, target: Target) -> None:
    """A precision the target's backend says it cannot build for those compute capabilities (int8 for
    TensorRT-RTX's sm_75) is refused here with the reason, not after calibrating, with the builder's text."""
    precision = loaded.recipe.engine.precision
    why = backend_module(target.backend).refuses(precision, target.compute_capabilities)
    if why:
        raise RecipeError([f"{loaded.where('engine', 'precision')}: engine.precision {precision} cannot be built "
                           f"for {', '.join('sm_' + cc.replace('.', '') for cc in target.compute_capabilities)} "
                           f"(target {spec!r}): {why}"])


def _precision_step(loaded: LoadedRecipe, inputs: dict, model, out: Path, cache: Cache, after: list[Step],
                    ranges: list[dict] | None) -> Step:
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
            read = _calibration_read(loaded, found, cal.batches, inputs)
            warn_uncalibrated(cache.warn, loaded.where("precision", "calibration", "data"), read, inputs, ranges)
            files["calibration"] = SourceFiles(read[0], tuple(read), beside_main=False)  # named by path
            context["calibration_files"] = [str(p) for p in read]
            context["calibration_unread"] = len(found) - len(read)
            context["where"] = loaded.where("precision", "calibration", "data")
        else:
            search = [loaded.resolve(p) for p in recipe.source.python_path]
            loader = module_file(cal.loader.split(":")[0], search, "precision.calibration.loader")
            files["calibration"] = _files([loader, *user_imports(loader, search, cache.stat_cache)])
            context["python_path"] = [str(p) for p in search]
            context["where"] = loaded.where("precision", "calibration", "loader")
    else:
        try:
            converter = fp16_converter(precision)
        except UsageError as exc:
            raise RecipeError([f"{loaded.where('engine', 'precision')}: {exc}"]) from None
    params = {"precision": precision, "converter": converter, "keep_io_types": options.keep_io_types,
              "keep_fp32": sorted(set(options.keep_fp32)), "calibration": calibration, "inputs": inputs}
    return Step(loaded, "precision", load_kind("precision"), params, files, out / precision, context=context,
                after=after)


def _calibration_read(loaded: LoadedRecipe, found: list[Path], limit: int | None, inputs: dict) -> list[Path]:
    """The calibration files the step reads (all, unless precision.calibration.batches limits them): only
    they are keyed. A shard is cut into batches of the inputs' opt batch (the largest, as the step may take
    any input's); with none in the recipe, a shard counts as one batch (more files keyed, never fewer)."""
    from trtbuild.models.calibration_files import files_to_read

    batch = max((spec["opt"][0] for spec in inputs.values() if spec.get("opt")), default=1 << 62)
    try:
        return files_to_read(found, limit, batch)
    except ValueError as exc:
        raise RecipeError([f"{loaded.where('precision', 'calibration', 'data')}: precision.calibration.data: {exc}"]) \
            from None


def fp16_converter(precision: str) -> str:
    """ModelOpt AutoCast when installed (fp16 and bf16), else onnxruntime's float16 converter (fp16 only)."""
    if importlib.util.find_spec("modelopt") is not None:
        return "modelopt"
    if precision == "bf16":
        raise UsageError("engine.precision bf16 needs NVIDIA ModelOpt (AutoCast), which is not installed: install it "
                         "without replacing the pinned onnx and onnxruntime (`pip install --no-deps "
                         "nvidia-modelopt==0.47.0 onnx_graphsurgeon onnxslim==0.1.98`, then its dependencies: see "
                         "docs/getting-started.md, Installing), or choose fp16")
    return "ort-float16"


def _export_step(loaded: LoadedRecipe, inputs: dict, out: Path, parity_data: dict, cache: Cache,
                 ranges: list[dict] | None) -> Step:
    recipe, source = loaded.recipe, loaded.recipe.source
    framework_of(source.framework).require()
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
    # The framework's outputs on the parity inputs are computed during export, where parity is on: with
    # it off no forward pass is spent on them (switching parity on reruns the export).
    parity = recipe.parity
    files |= parity_data
    params = {
        "framework": source.framework, "opset": recipe.onnx.opset or framework_of(source.framework).default_opset,
        "inputs": _read(inputs, *AT_OPT),  # which dims are dynamic, not their range
        "entrypoint": source.entrypoint, "args": source.args, "kwargs": source.kwargs,
        "exporter": source.exporter if framework_of(source.framework).exporters else None,
        "package": package,  # its version goes into the key with the other tools
        "outputs": source.outputs, "inputs_as_nchw": source.inputs_as_nchw,
        "input_order": list(inputs),  # PyTorch binds a lone input, or a TorchScript model's, by position
        "reference": {"seed": parity.seed} if parity.enabled else None,
        "ranges": ranges,  # a new min or max reruns the export: it runs the model there
    }
    return Step(loaded, "export", load_kind("export"), params, files, out,
                context={"python_path": [str(p) for p in search], "where": _where(loaded)})


def _files(paths: list[Path], main: Path | None = None) -> SourceFiles:
    return SourceFiles(main or paths[0], tuple(paths))


def _input_params(spec, default_dtype: str | None) -> dict:
    lo, mid, hi = spec.profile()
    return {"dtype": spec.dtype or default_dtype, "shape": spec.dims, "min": lo, "opt": mid, "max": hi}


def _read(inputs: dict, *fields: str) -> dict:
    """The part of each input spec a step reads: only that goes into its key (a new max rebuilds the engine,
    not what runs the model at opt; a step that runs the model at its opt shape reruns when opt changes)."""
    return {name: {f: spec[f] for f in fields} for name, spec in inputs.items()}


def _where(loaded: LoadedRecipe) -> dict[str, str]:
    """`file:line` of the recipe values a step may blame, by dotted key ("recipe": the file itself)."""
    recipe = loaded.recipe
    keys = [("source",), *(("source", k) for k in recipe.source.given), ("inputs",),
            *(("inputs", n) for n in recipe.inputs), *(("inputs", n, "dtype") for n in recipe.inputs)]
    return {".".join(k): loaded.where(*k) for k in keys} | {"recipe": str(loaded.file)}


def producer(source: Step | Pick) -> Step:
    """The step whose outputs `source` hands over."""
    return source.step if isinstance(source, Pick) else source


def upstream_outputs(source: Step | Pick, record: dict) -> dict:
    """The outputs of an upstream action record that `source` hands over."""
    return source.select(record["outputs"]) if isinstance(source, Pick) else record["outputs"]
