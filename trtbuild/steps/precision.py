"""precision: the fp32 ONNX model -> fp16 / bf16 (ModelOpt AutoCast, else onnxruntime's float16 converter),
validated here (ONNX Runtime loads it, the ONNX checker passes it), or int8 / fp8 with symmetric Q/DQ nodes
calibrated on data (ONNX Runtime quantization, QDQ format)."""

from __future__ import annotations

import json
import traceback
from collections import Counter
from pathlib import Path

from trtbuild.models import float16
from trtbuild.models.calibration import calibration_batches
from trtbuild.recipes.shared import QUANTIZED_PRECISIONS
from trtbuild.errors import RecipeError, StepError, UsageError, first_line
from trtbuild.models.onnx_io import save_onnx
from trtbuild.steps import AT_OPT, Job, Reads

NAME = "precision"
MAIN_OUTPUT = "model.onnx"
EXTERNAL_DATA = True  # files besides MAIN_OUTPUT: the model's external data
CALIBRATION_SHAPES = "calibration-shapes.json"  # int8 / fp8: each input's [smallest, largest] size per dim calibrated
OPTIONAL_OUTPUTS = (CALIBRATION_SHAPES,)
READS = Reads(params=("precision", "converter", "keep_io_types", "keep_fp32", "calibration", "inputs"),
              files=("model", "calibration"),
              context=("calibration_files", "calibration_unread", "python_path", "where"))
IMPORTS = ("numpy", "onnx", "onnxruntime")  # a spare worker loads these before this step comes

CONVERTER_TOOLS = {"modelopt": ("nvidia-modelopt",), "ort-float16": ("onnxruntime",),
                   "ort-quantization": ("onnxruntime",)}

# Q/DQ on the inputs of the layers that compute (Conv, MatMul, Gemm), as TensorRT's quantization guide
# places them and fuses them into int8 / fp8 kernels. Measured on Hugging Face configs (bench/README.md):
# ONNX Runtime's default placement also quantizes elementwise ops, which broke two ways: a Mul by a
# constant (BERT's attention scale) becomes a quantized scalar the builder refuses ("Quantized constant
# ... is only allowed before DQ"), and an Add of a causal mask (finfo.min) gets a range that wipes out
# the scores (GPT-2 and Llama: relative error 1.3).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def tools(params: dict) -> tuple[str, ...]:
    fp8 = ("ml_dtypes",) if params["precision"] == "fp8" else ()  # fp8 weights are cast with ml_dtypes
    return ("onnx", "numpy") + CONVERTER_TOOLS[params["converter"]] + fp8


def run(job: Job) -> dict:
    import onnx

    source = job.inputs["model"]
    model = onnx.load(str(source))
    ops_to_keep, nodes_to_keep = _split_keep_list(model, job.params["keep_fp32"])
    precision, converter = job.params["precision"], job.params["converter"]
    out = job.outdir / MAIN_OUTPUT
    used = {}
    if converter == "ort-quantization":
        try:
            used = _quantize(source, out, job, ops_to_keep, nodes_to_keep, model)
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            from trtbuild.models.tensors import onnxruntime_problem

            traceback.print_exc()
            raise StepError(f"ONNX Runtime, which calibrates the model, cannot run it: {onnxruntime_problem(exc)}",
                            user_error=True) from None
    else:
        converted = float16.convert(source, model, precision, converter, ops_to_keep, nodes_to_keep,
                                    job.params["keep_io_types"])
        if job.params["keep_io_types"]:
            keep_io_types(model, converted)
        save_onnx(converted, out)
        if warnings := float16.validate(out, source, precision):
            used["warnings"] = warnings
    return _describe(onnx.load(str(out)), precision, converter) | used


def keep_io_types(original, converted) -> None:
    """Give every graph input and output of `converted` its type in `original`, whatever the converter
    left at the edges (a float16 converter ends a model whose last op it kept in fp32, a Resize, say,
    with a Cast to fp16): a Cast at the edge, so a deployment's float32 buffers stay right."""
    from onnx import helper

    graph = converted.graph
    want = {v.name: v.type.tensor_type.elem_type for v in [*original.graph.input, *original.graph.output]}
    initializers = {i.name for i in graph.initializer}
    edges = [(edge, True) for edge in graph.input] + [(edge, False) for edge in graph.output]
    for edge, is_input in edges:
        name, has = edge.name, edge.type.tensor_type.elem_type
        if name in initializers or name not in want or has in (want[name], 0):
            continue
        inner = f"{name}__{'in' if is_input else 'out'}_cast"
        for node in graph.node:  # the graph now uses `inner` for the converter's tensor
            node.input[:] = [inner if i == name else i for i in node.input]
            node.output[:] = [inner if o == name else o for o in node.output]
        for info in graph.value_info:
            if info.name == name:
                info.name = inner
        if is_input:
            graph.node.insert(0, helper.make_node("Cast", [name], [inner], to=has, name=inner))
        else:
            graph.node.append(helper.make_node("Cast", [inner], [name], to=want[name], name=inner))
        edge.type.tensor_type.elem_type = want[name]


def _split_keep_list(model, keep: list[str]) -> tuple[list[str], list[str]]:
    ops = {n.op_type for n in model.graph.node}
    names = {n.name for n in model.graph.node}
    unknown = [k for k in keep if k not in ops and k not in names]
    if unknown:
        raise StepError(f"precision.keep_fp32: {unknown} are neither op types nor node names in the model "
                        f"(its op types: {', '.join(sorted(ops))})", user_error=True)
    return [k for k in keep if k in ops], [k for k in keep if k not in ops]


def _quantize(source: Path, out: Path, job: Job, ops_to_keep, nodes_to_keep, model) -> dict:
    """Symmetric int8 Q/DQ from ONNX Runtime; for fp8, the same calibrated ranges re-expressed in
    float8 e4m3 (ONNX Runtime's own fp8 mode fits scales to the data's spread and saturates weights)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fp8 = job.params["precision"] == "fp8"
    prepared = job.outdir.parent / "prepared.onnx"  # scratch, outside the outputs
    if fp8 and _opset(model) < 19:  # float8 Q/DQ arrived in opset 19
        upgraded = job.outdir.parent / "opset19.onnx"
        save_onnx(onnx.version_converter.convert_version(model, 19), upgraded)
        source = upgraded
    notes = _prepare(source, prepared)
    excluded = nodes_to_keep + [n.name for n in model.graph.node if n.op_type in ops_to_keep]
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[job.params["calibration"]["method"]]
    batches, leftover = calibration_batches(job, model)
    quantize_static(
        str(prepared), str(out), _Reader(batches), quant_format=QuantFormat.QDQ,
        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=method, nodes_to_exclude=excluded, op_types_to_quantize=list(QUANTIZED_OPS),
        # TensorRT: symmetric (zero point 0), per-channel weights, per-tensor activations, float biases.
        # fp8 asks for float weights behind Q/DQ so they are rounded once, to fp8, not via int8.
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "AddQDQPairToWeight": fp8},
    )
    if fp8:
        quantized = onnx.load(str(out))
        _int8_scales_to_fp8(quantized)
        _store_weights_in_fp8(quantized)
        save_onnx(quantized, out)
    used = _calibration_used(batches, job.params["calibration"]["batches"], leftover)
    (job.outdir / CALIBRATION_SHAPES).write_text(json.dumps(used["calibration"]["shapes"]))
    if notes:
        used["warnings"] = notes + used.get("warnings", [])
    return used


def _prepare(source: Path, prepared: Path) -> list[str]:
    """ONNX Runtime's pre-processing (shape inference, optimization) before quantizing. Its symbolic shape
    inference fails on graphs it cannot follow (a Range over a sequence length, in BERT) or without
    sympy: then without it, as ONNX Runtime itself suggests; tensors of unknown shape stay unquantized."""
    import os

    from onnxruntime.quantization.shape_inference import quant_pre_process

    here = os.getcwd()
    os.chdir(prepared.parent)  # where a failed symbolic shape inference saves its sym_shape_infer_temp.onnx
    try:
        try:
            quant_pre_process(str(source), str(prepared))
            return []
        except Exception as exc:  # AssertionError, "Incomplete symbolic shape inference", ImportError (sympy)
            reason = first_line(exc) or type(exc).__name__
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    finally:
        os.chdir(here)
    return [f"quantization pre-processing without symbolic shape inference, which failed ({reason[:200]})"]


def _calibration_used(batches: list[dict], asked: int | None, leftover: str | None) -> dict:
    """What calibration used, for the report; a warning when the data gave fewer batches than asked,
    or more than `batches` lets it use."""
    samples = sum(len(next(iter(batch.values()))) for batch in batches)
    shapes = {name: [[min(b[name].shape[d] for b in batches), max(b[name].shape[d] for b in batches)]
                     for d in range(batches[0][name].ndim)] for name in (batches[0] if batches else {})}
    used = {"calibration": {"batches": len(batches), "samples": samples, "batches_asked": asked, "shapes": shapes}}
    if asked is not None and len(batches) < asked:
        used["warnings"] = [f"calibration used {len(batches)} batches ({samples} samples), fewer than the "
                            f"{asked} precision.calibration.batches asks for: the data has no more"]
    if leftover:
        used["warnings"] = [f"calibration used {len(batches)} batches ({samples} samples), the "
                            f"precision.calibration.batches limit: {leftover} were not used (remove `batches` "
                            "to calibrate on all the data)"]
    return used


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _int8_scales_to_fp8(model) -> None:
    """Symmetric int8 maps [-amax, amax] to [-127, 127]; float8 e4m3 spans [-448, 448]. Scale each
    Q/DQ pair by 127/448 and make its zero point a float8 zero, which makes the pair fp8."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    scales, zero_points = set(), set()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) == 3:
            scales.add(node.input[1])
            zero_points.add(node.input[2])
    for name in scales:
        scale = numpy_helper.to_array(inits[name]).astype(np.float32) * np.float32(127 / 448)
        inits[name].CopyFrom(numpy_helper.from_array(scale, name))
    for name in zero_points:
        dims = list(inits[name].dims)
        inits[name].CopyFrom(helper.make_tensor(name, TensorProto.FLOAT8E4M3FN, dims, [0.0] * int(np.prod(dims))))


def _store_weights_in_fp8(model) -> None:
    """Quantize ahead of time each weight a QuantizeLinear reads, so the file holds float8 weights
    feeding DequantizeLinear, as an int8 model holds int8 weights (rounding as QuantizeLinear does)."""
    import ml_dtypes
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers = Counter(name for node in graph.node for name in node.input)
    folded = [n for n in graph.node
              if n.op_type == "QuantizeLinear" and n.input[0] in inits and readers[n.input[0]] == 1]
    for node in folded:
        weight = numpy_helper.to_array(inits[node.input[0]])
        scale = numpy_helper.to_array(inits[node.input[1]])
        if scale.ndim:  # per channel, along the node's axis
            shape = [1] * weight.ndim
            shape[next((a.i for a in node.attribute if a.name == "axis"), 1)] = -1
            scale = scale.reshape(shape)
        quantized = np.clip(weight / scale, -448, 448).astype(ml_dtypes.float8_e4m3fn)
        graph.initializer.append(numpy_helper.from_array(quantized, node.output[0]))
        graph.node.remove(node)
    dropped = {node.input[0] for node in folded}
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over a list of feeds."""

    def __init__(self, batches: list[dict]):
        self._batches = iter(batches)

    def get_next(self):
        return next(self._batches, None)


def _describe(model, precision: str, converter: str) -> dict:
    import onnx
    from onnx import numpy_helper

    ops = Counter(n.op_type for n in model.graph.node)
    meta = {"precision": precision, "converter": converter}
    if converter == "ort-quantization":
        inits = {i.name: i for i in model.graph.initializer}
        zero_points = [inits[n.input[2]] for n in model.graph.node
                       if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits]
        if any(numpy_helper.to_array(z).astype("float32").any() for z in zero_points):
            raise StepError("quantization produced non-zero zero points, which TensorRT rejects")
        meta |= {"quantize_nodes": ops["QuantizeLinear"], "dequantize_nodes": ops["DequantizeLinear"],
                 "quantized_types": sorted({onnx.TensorProto.DataType.Name(z.data_type) for z in zero_points})}
    else:
        types = Counter(onnx.TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer)
        meta["initializer_types"] = dict(types)
    return meta


AFTER = ("simplify",)
# Precisions made by transforming the ONNX model (fp32 / tf32 are builder settings).
TRANSFORMED_PRECISIONS = ("fp16", "bf16", "int8", "fp8")


def plan(p):
    """For fp16 / bf16 / int8 / fp8: the model converted or quantized, which the engine then builds."""
    recipe, options = p.recipe, p.recipe.precision
    precision = recipe.engine.precision
    if precision not in TRANSFORMED_PRECISIONS:
        return None
    inputs = p.read(*AT_OPT)
    files: dict = {"model": p.model}
    context: dict = {}
    calibration = None
    if precision in QUANTIZED_PRECISIONS:
        converter = "ort-quantization"
        cal = options.calibration
        # The files a data glob resolves to are inputs (by content and path), not the glob's spelling.
        calibration = {"method": cal.method, "batches": cal.batches, "loader": cal.loader, "data": bool(cal.data)}
        if cal.data:
            where = p.loaded.where("precision", "calibration", "data")
            found = sorted({f.resolve() for f in p.loaded.file.parent.glob(cal.data) if f.is_file()})
            read = _calibration_read(where, found, cal.batches, inputs)
            p.warn_uncalibrated(p.cache.warn, where, read, inputs, p.ranges)
            files["calibration"] = p.SourceFiles(read[0], tuple(read), beside_main=False)  # named by path
            context["calibration_files"] = [str(f) for f in read]
            context["calibration_unread"] = len(found) - len(read)
            context["where"] = where
        else:
            search = [p.loaded.resolve(f) for f in recipe.source.python_path]
            loader = p.sources.module_file(cal.loader.split(":")[0], search, "precision.calibration.loader")
            files["calibration"] = p.files([loader, *p.sources.user_imports(loader, search, p.cache.stat_cache)])
            context["python_path"] = [str(f) for f in search]
            context["where"] = p.loaded.where("precision", "calibration", "loader")
    else:
        try:
            converter = fp16_converter(precision)
        except UsageError as exc:
            raise p.recipe_error(("engine", "precision"), str(exc)) from None
    params = {"precision": precision, "converter": converter, "keep_io_types": options.keep_io_types,
              "keep_fp32": sorted(set(options.keep_fp32)), "calibration": calibration, "inputs": inputs}
    step = p.step(NAME, params, files, p.out / precision, context=context, after=[p.first("check")])
    p.model = p.pick(step, (MAIN_OUTPUT, f"{MAIN_OUTPUT}.data"))  # not its calibration shapes: the same engine
    return step


def _calibration_read(where: str, found: list[Path], limit: int | None, inputs: dict) -> list[Path]:
    """The calibration files the step reads (all, unless precision.calibration.batches limits them): only
    they are keyed. A shard is cut into batches of the inputs' opt batch (the largest, as the step may take
    any input's); with none in the recipe, a shard counts as one batch (more files keyed, never fewer)."""
    from trtbuild.models.calibration_files import files_to_read

    batch = max((spec["opt"][0] for spec in inputs.values() if spec.get("opt")), default=1 << 62)
    try:
        return files_to_read(found, limit, batch)
    except ValueError as exc:
        raise RecipeError([f"{where}: precision.calibration.data: {exc}"]) from None


def fp16_converter(precision: str) -> str:
    """ModelOpt AutoCast when installed (fp16 and bf16), else onnxruntime's float16 converter (fp16 only)."""
    import importlib.util

    if importlib.util.find_spec("modelopt") is not None:
        return "modelopt"
    if precision == "bf16":
        raise UsageError("engine.precision bf16 needs NVIDIA ModelOpt (AutoCast), which is not installed: install it "
                         "without replacing the pinned onnx and onnxruntime (`pip install --no-deps "
                         "nvidia-modelopt==0.47.0 onnx_graphsurgeon onnxslim==0.1.98`, then its dependencies: see "
                         "docs/getting-started.md, Installing), or choose fp16")
    return "ort-float16"
