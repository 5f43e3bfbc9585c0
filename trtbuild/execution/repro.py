"""Repro scripts: a standalone Python file that makes a step's library calls on the same inputs,
without trtbuild, for rerunning a failure by hand or attaching to an upstream bug report (as
Polygraphy's --gen-script does). Written beside a failed step's log, or by `trtbuild repro`.

Each script names its inputs by absolute path: the user's files where they are, and the step's
upstream artifacts copied into the script's folder (a copy: editing it cannot reach the cache).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from trtbuild import __version__
from trtbuild.execution import repro_checks

_HEADER = '''#!/usr/bin/env python3
"""{what}

Reproduces the trtbuild step {label} (trtbuild {version}) with the same library calls on the same
inputs, without trtbuild: run it with the Python environment that ran the build.
"""
import json
import sys

PARAMS = json.loads({params!r})
INPUTS = json.loads({inputs!r})
'''


def write_repro(job: dict, folder: Path, label: str, scratch: Path | None = None) -> Path:
    """Write folder/repro.py for `job` (the request a worker got); inputs under `scratch` (a step's
    temporary folder) are copied into `folder`, with the files staged beside each (an ONNX model's
    external data, an export's reference outputs)."""
    folder.mkdir(parents=True, exist_ok=True)
    inputs = {}
    for name, path in job["inputs"].items():
        path = Path(path)
        if scratch is not None and scratch in path.parents:
            kept = folder / name
            kept.mkdir(exist_ok=True)
            for part in path.parent.iterdir():  # its external data; an export's reference outputs
                if part.is_file():
                    shutil.copyfile(part, kept / part.name)
            path = kept / path.name
        inputs[name] = str(path)
    what, body = _BODIES[job["kind"]](job["params"], job["context"])
    text = _HEADER.format(what=what, label=label, version=__version__, params=json.dumps(job["params"]),
                          inputs=json.dumps(inputs)) + body
    script = folder / "repro.py"
    script.write_text(text)
    script.chmod(0o755)
    return script


def _engine(params: dict, context: dict) -> tuple[str, str]:
    import inspect

    from trtbuild.backends import backend
    from trtbuild.backends.engine import configure_builder

    kind = backend(params["target"]["backend"])
    # The builder configuration is the code the engine step runs, copied: the two cannot drift.
    functions = "\n\n".join(inspect.getsource(f) for f in (configure_builder, kind.configure))
    return f"{kind.MODULE}: parse the ONNX model, configure, add the optimization profiles, build the plan.", f'''
import {kind.MODULE} as trt


{functions}


logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)
network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
parser = trt.OnnxParser(network, logger)
parsed = parser.parse_from_file(INPUTS["model"])
for i in range(parser.num_errors):
    error = parser.get_error(i)
    print(f"parser error: node {{error.node_name()!r}} ({{error.node_operator()}}): {{error.desc()}}", file=sys.stderr)
if not parsed:
    sys.exit("the ONNX parser failed")
config = builder.create_builder_config()
configure_builder(trt, config, PARAMS["workspace"], PARAMS["optimization_level"], PARAMS["precision"] == "tf32")
configure(trt, config, PARAMS["target"])  # {kind.NAME}
inputs = [network.get_input(i) for i in range(network.num_inputs)]
# The optimization profiles in index order (a runtime selects one by index).
PROFILES = PARAMS["profiles"] or [{{"name": "default", "inputs": PARAMS["inputs"]}}]
if any(-1 in tuple(t.shape) for t in inputs):
    for index, spec in enumerate(PROFILES):
        profile = builder.create_optimization_profile()
        for t in inputs:
            shape = spec["inputs"].get(t.name)
            shapes = (shape["min"], shape["opt"], shape["max"]) if shape else (tuple(t.shape),) * 3
            profile.set_shape(t.name, *shapes)
        if config.add_optimization_profile(profile) < 0:
            sys.exit(f"TensorRT refused optimization profile {{index}} ({{spec['name']}})")
        print(f"optimization profile {{index}} ({{spec['name']}}):", {{n: s["opt"] for n, s in spec["inputs"].items()}})
plan = builder.build_serialized_network(network, config)
if plan is None:
    sys.exit("the builder returned no plan")
with open("model.plan", "wb") as f:
    f.write(plan)
print("built model.plan")
'''


def _check(params: dict, context: dict) -> tuple[str, str]:
    from trtbuild.backends import backend

    modules = {name: backend(name).MODULE for name in params["backends"]}
    return "onnx: the checker (full_check) and strict shape inference, whose complaints trtbuild reports as " \
        "warnings; then each target backend's parser (supports_model_v2): the nodes it refuses fail the step.", \
        f"\nBACKEND_MODULES = {modules!r}\n" + '''
import importlib

import onnx

for label, check in (("onnx checker", lambda: onnx.checker.check_model(INPUTS["model"], full_check=True)),
                     ("strict shape inference", lambda: onnx.shape_inference.infer_shapes_path(
                         INPUTS["model"], "inferred.onnx", check_type=True, strict_mode=True))):
    try:
        check()
        print(f"{label}: no complaints")
    except Exception as exc:
        print(f"{label} (a warning in trtbuild): {exc}")
model = onnx.load(INPUTS["model"], load_external_data=False)
constant = {i.name for i in model.graph.initializer}
constant |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
# trtbuild leaves custom ops to the engine step (a plugin may provide them), and nodes on constants to
# onnx-simplifier, which may fold them
passed = {n.name for n in model.graph.node
          if n.domain not in ("", "ai.onnx", "ai.onnx.ml") or all(i in constant for i in n.input if i)}
# nodes in the ONNX domain whose op ONNX does not define (tf2onnx's unconverted TensorFlow ops): no backend
# imports them (an op named like a TensorRT plugin, *_TRT, is left to the engine step)
foreign = [n for n in model.graph.node if n.domain in ("", "ai.onnx", "ai.onnx.ml") and not n.op_type.endswith("_TRT")
           and not onnx.defs.has(n.op_type, n.domain if n.domain == "ai.onnx.ml" else "")]
for n in foreign:
    print(f"node {n.name!r} ({n.op_type}): not an ONNX op")
refused = len(foreign)
for backend in PARAMS["backends"]:
    trt = importlib.import_module(BACKEND_MODULES[backend])
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    with open(INPUTS["model"], "rb") as f:
        supported = parser.supports_model_v2(f.read(), INPUTS["model"])
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        if error.code() == trt.ErrorCode.UNSUPPORTED_NODE and error.node_name() not in passed:
            refused += 1
            print(f"node {error.node_name()!r} ({error.node_operator()}): {backend} cannot import it: {error.desc()}")
    print(f"{backend}: supports the model: {supported}")
sys.exit(1 if refused else 0)
'''


def _precision(params: dict, context: dict) -> tuple[str, str]:
    from trtbuild.models.float16 import KEPT_IN_FP32
    from trtbuild.steps import precision

    if params["converter"] == "ort-quantization":
        calibration = params["calibration"]
        source = (f"the loader {calibration['loader']}" if calibration["loader"]
                  else f"{len(context.get('calibration_files', []))} calibration file(s)")
        return f"ONNX Runtime static quantization (QDQ, symmetric) calibrated on {source}.", f'''
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

CALIBRATION_FILES = {context.get("calibration_files", [])!r}
PYTHON_PATH = {context.get("python_path", [])!r}


def fit(array):
    """float data as float32; token ids and other integers as the model takes them (int64)."""
    array = np.asarray(array)
    return array.astype(np.float32) if array.dtype.kind == "f" else array.astype(np.int64)


def batches():
    spec = PARAMS["calibration"]
    if spec["loader"]:
        import importlib
        sys.path[:0] = PYTHON_PATH
        module, _, attr = spec["loader"].partition(":")
        loader = importlib.import_module(module)
        for part in attr.split("."):
            loader = getattr(loader, part)
        for batch in loader():
            yield {{k: fit(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in batch.items()}}
        return
    names = list(PARAMS["inputs"])
    for file in CALIBRATION_FILES:
        if file.endswith(".npz"):
            with np.load(file) as npz:
                size = PARAMS["inputs"][names[0]]["opt"][0]
                arrays = {{n: fit(npz[n]) for n in names}}
            count = len(next(iter(arrays.values())))
            for i in range(0, count, size):
                yield {{n: a[i:i + size] for n, a in arrays.items()}}
        else:
            yield {{names[0]: fit(np.load(file))}}


class Reader:
    def __init__(self):
        self.data = iter(list(batches())[:PARAMS["calibration"]["batches"]])

    def get_next(self):
        return next(self.data, None)


try:
    quant_pre_process(INPUTS["model"], "prepared.onnx")
except Exception as exc:  # trtbuild falls back the same way
    print(f"symbolic shape inference failed ({{exc!r}}); without it", file=sys.stderr)
    quant_pre_process(INPUTS["model"], "prepared.onnx", skip_symbolic_shape=True)
prepared = onnx.load("prepared.onnx", load_external_data=False)
ops = {{n.op_type for n in prepared.graph.node}}
keep = PARAMS["keep_fp32"]
EXCLUDED = [k for k in keep if k not in ops] + [n.name for n in prepared.graph.node if n.op_type in keep]
methods = {{"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}}
quantize_static("prepared.onnx", "model.onnx", Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=methods[PARAMS["calibration"]["method"]], nodes_to_exclude=EXCLUDED,
                op_types_to_quantize={list(precision.QUANTIZED_OPS)!r},
                extra_options={{"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}})
print("quantized: model.onnx (for fp8, trtbuild then re-expresses these int8 ranges as float8 scales)")
'''
    if params["converter"] == "modelopt":
        return "NVIDIA ModelOpt AutoCast: mixed precision.", '''
import onnx
from modelopt.onnx.autocast import convert_to_mixed_precision

model = onnx.load(INPUTS["model"])
ops = {n.op_type for n in model.graph.node}
converted = convert_to_mixed_precision(
    INPUTS["model"], low_precision_type=PARAMS["precision"],
    op_types_to_exclude=[k for k in PARAMS["keep_fp32"] if k in ops],
    nodes_to_exclude=[f"^{k}$" for k in PARAMS["keep_fp32"] if k not in ops], keep_io_types=PARAMS["keep_io_types"])
onnx.save(converted, "model.onnx")
print("converted: model.onnx")
'''
    return "onnxruntime's float16 converter: float32 -> float16, trtbuild's fp32 ops plus keep_fp32; then " \
        "ONNX Runtime loads the result, as the precision step checks.", f'''
import onnx
import onnxruntime
from onnxruntime.transformers.float16 import convert_float_to_float16

KEPT_IN_FP32 = {list(KEPT_IN_FP32)!r}
model = onnx.load(INPUTS["model"])
ops = {{n.op_type for n in model.graph.node}}
converted = convert_float_to_float16(
    model, keep_io_types=PARAMS["keep_io_types"],
    op_block_list=KEPT_IN_FP32 + [k for k in PARAMS["keep_fp32"] if k in ops],
    node_block_list=[k for k in PARAMS["keep_fp32"] if k not in ops] or None)
onnx.save(converted, "model.onnx")
onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])  # raises on an invalid model
onnx.checker.check_model("model.onnx")
print("converted: model.onnx, loads in ONNX Runtime")
'''


def _export(params: dict, context: dict) -> tuple[str, str]:
    if params["framework"] == "pytorch":
        return _export_pytorch(params, context)
    return f"tf2onnx's own command line on the {params['framework']} model.", '''
import subprocess

PATH = INPUTS.get("model")
inputs, outputs = list(PARAMS["inputs"]), PARAMS["outputs"] or []
command = [sys.executable, "-m", "tf2onnx.convert", "--opset", str(PARAMS["opset"]), "--output", "model.onnx"]
if PATH.endswith(".pb"):
    command += ["--graphdef", PATH, "--inputs", ",".join(inputs), "--outputs", ",".join(outputs)]
elif PATH.endswith((".keras", ".h5")):
    command += ["--keras", PATH]
else:
    command += ["--saved-model", PATH, "--signature_def", "serving_default"]
if PARAMS["inputs_as_nchw"]:
    command += ["--inputs-as-nchw", ",".join(PARAMS["inputs_as_nchw"])]
print(" ".join(command))
sys.exit(subprocess.call(command))
'''


def _export_pytorch(params: dict, context: dict) -> tuple[str, str]:
    return f"torch.onnx.export ({params['exporter']} exporter) of the recipe's PyTorch model.", f'''
import importlib
import inspect

import numpy as np
import torch

sys.path[:0] = {context.get("python_path", [])!r}
if PARAMS["entrypoint"]:
    module, _, attr = PARAMS["entrypoint"].partition(":")
    make = importlib.import_module(module)
    for part in attr.split("."):
        make = getattr(make, part)
    model = make(*PARAMS["args"], **PARAMS["kwargs"])
elif INPUTS["model"].endswith(".pt2"):
    model = torch.export.load(INPUTS["model"]).module()
else:
    model = torch.jit.load(INPUTS["model"], map_location="cpu")
if "checkpoint" in INPUTS:
    state = torch.load(INPUTS["checkpoint"], map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
if hasattr(model, "eval"):
    model.eval()
names = list(PARAMS["inputs"])
example = []
for name, spec in PARAMS["inputs"].items():
    dtype = getattr(torch, spec["dtype"] or "float32")
    shape = spec["opt"]
    if dtype.is_floating_point and "mask" not in name:
        example.append(torch.from_numpy(np.random.default_rng(0).standard_normal(shape)).to(dtype))
    else:
        example.append(torch.ones(shape, dtype=dtype))
try:
    parameters = list(inspect.signature(model.forward).parameters)
except (TypeError, ValueError):
    parameters = []
by_name = len(names) > 1 and set(names) <= set(parameters)
args, kwargs = ((), dict(zip(names, example))) if by_name else (tuple(example), None)
dynamic = {{n: [i for i, d in enumerate(s["shape"]) if d == -1] for n, s in PARAMS["inputs"].items()}}


def export(dynamo):
    options = dict(opset_version=PARAMS["opset"], input_names=names, output_names=PARAMS["outputs"] or None)
    if dynamo:
        shapes = {{n: {{i: torch.export.Dim.DYNAMIC for i in dims}} for n, dims in dynamic.items()}}
        torch.onnx.export(model, args, "model.onnx", kwargs=kwargs, dynamo=True,
                          dynamic_shapes=shapes if by_name else tuple(shapes.values()), **options)
    else:
        axes = {{n: {{i: f"{{n}}_{{i}}" for i in dims}} for n, dims in dynamic.items() if dims}}
        torch.onnx.export(model, args + ((kwargs,) if kwargs else ()), "model.onnx", dynamo=False,
                          dynamic_axes=axes or None, **options)


with torch.no_grad():
    if PARAMS["exporter"] in ("dynamo", "torchscript"):
        export(PARAMS["exporter"] == "dynamo")
    else:  # auto: dynamo, then torchscript, as trtbuild tries them
        try:
            export(True)
        except Exception as exc:
            print(f"dynamo failed ({{type(exc).__name__}}: {{exc}}); trying torchscript", file=sys.stderr)
            export(False)
print("exported model.onnx")
'''


def _onnxruntime(params: dict, context: dict) -> tuple[str, str]:
    return "ONNX Runtime: run the model(s) once on seeded inputs at the opt shapes.", '''
import numpy as np
import onnxruntime

for name, path in INPUTS.items():
    if not path.endswith(".onnx"):
        continue
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(PARAMS.get("seed", 0))
    feeds = {}
    for i in session.get_inputs():
        shape = PARAMS.get("inputs", {}).get(i.name, {}).get("opt") or [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = (rng.standard_normal(shape).astype(np.float32) if "float" in i.type
                         else np.ones(shape, np.int64))
    outputs = session.run(None, feeds)
    print(name, [o.shape for o in outputs])
'''


_BODIES = {"engine": _engine, "simplify": repro_checks.simplify, "check": _check, "precision": _precision,
           "export": _export, "parity": repro_checks.parity, "accuracy": repro_checks.accuracy, "verify": _onnxruntime}
