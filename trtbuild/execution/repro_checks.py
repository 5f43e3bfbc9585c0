"""Repro scripts of the steps that judge a model (parity, accuracy, simplify's check): they run the same
comparison on the same inputs as the step and exit 1 where it failed, printing the same table.

The comparison code is trtbuild's own, copied into the script (inspect.getsource), so that the script
runs without trtbuild and cannot drift from what the step does."""

from __future__ import annotations

import inspect

_PRELUDE = '''
from pathlib import Path

import numpy as np
import onnx


class StepError(Exception):
    def __init__(self, message, **_):
        super().__init__(message)


def save_onnx(model, path):
    onnx.save(model, str(path))

'''


def _sources(*functions) -> str:
    return "\n\n".join(inspect.getsource(f) for f in functions)


def _helpers() -> str:
    from trtbuild.models import onnx_io, tensors
    from trtbuild.steps import export

    return _PRELUDE + _sources(
        onnx_io.runtime_inputs, onnx_io.dims, onnx_io.dtype_name, onnx_io.complete_inputs, tensors.numpy_dtype,
        tensors.at_batch_one, tensors.example_inputs, tensors._values_in, tensors._load_npz, tensors.compare,
        tensors.degenerate, tensors.format_table, tensors.run_onnxruntime, export.load_reference)


def parity(params: dict, context: dict) -> tuple[str, str]:
    return "ONNX Runtime on the exported model against the framework's reference outputs, as the parity step " \
           "compares them (exit 1 where it fails).", _helpers() + '''

onnx_path = Path(INPUTS["onnx"])
reference = onnx_path.with_name("reference.npz")
if not reference.exists():
    failed = onnx_path.with_name("reference-error.txt")
    sys.exit("no reference outputs: " + (failed.read_text() if failed.exists() else "the export wrote none"))
feeds, expected = load_reference(reference)
names, actual = run_onnxruntime(onnx_path, feeds)
rows = compare(names, expected, actual, PARAMS["atol"], PARAMS["rtol"],
               rel_l2_passes=PARAMS["max_relative_error"] or None, per_output=PARAMS["outputs"])
print(format_table(rows, PARAMS["atol"], PARAMS["rtol"]))
for what in degenerate(names, expected):
    print("warning: parity proves nothing for it:", what)
sys.exit(0 if all(r["ok"] for r in rows) else 1)
'''


def accuracy(params: dict, context: dict) -> tuple[str, str]:
    from trtbuild.steps import accuracy as step

    return "ONNX Runtime on the fp32 and the converted model, on the accuracy gate's inputs, judged by relative " \
           "L2 error as the gate judges them (exit 1 where it fails).", _helpers() + "\n\n" + \
        _sources(step._bf16_rounded_in_fp32) + '''

inputs = complete_inputs(INPUTS["fp32"], PARAMS["inputs"])
feeds = example_inputs(inputs, PARAMS["seed"], INPUTS.get("data"))
names, expected = run_onnxruntime(INPUTS["fp32"], feeds)
model = INPUTS["model"]
if PARAMS["precision"] == "bf16":
    model = _bf16_rounded_in_fp32(model, Path("bf16-emulated.onnx"))
_, actual = run_onnxruntime(model, feeds, optimize=False)
limit = PARAMS["max_relative_error"]
rows = compare(names, expected, actual, atol=0.0, rtol=0.0, max_rel_l2=limit)
print(format_table(rows, max_rel_l2=limit))
sys.exit(0 if all(r["ok"] for r in rows) else 1)
'''


def simplify(params: dict, context: dict) -> tuple[str, str]:
    from trtbuild.steps import simplify as step

    return "onnx-simplifier, then the simplify step's check: both models once on ONNX Runtime on the same seeded " \
           "inputs, outputs equal within atol / rtol or float noise (exit 1 where they differ).", _helpers() + \
        "\n\n" + _sources(step._rel_l2) + f'''

import onnxsim

REL_L2_NOISE = {step.REL_L2_NOISE!r}
thorough = PARAMS["check"] == "thorough"
shapes = {{name: spec["opt"] for name, spec in PARAMS["inputs"].items()}}
model, same = onnxsim.simplify(INPUTS["model"], check_n=3 if thorough else 0, test_input_shapes=shapes)
onnx.save(model, "model.onnx")
if thorough:
    print("onnx-simplifier's check: outputs match the original:", same)
    sys.exit(0 if same else 1)
at_opt = complete_inputs(INPUTS["model"], PARAMS["inputs"])
feeds = example_inputs(at_batch_one(at_opt), seed=0)
try:
    names, expected = run_onnxruntime(INPUTS["model"], feeds, optimize=False)
except Exception:  # batch 1 outside the model's range: at opt, as the step does
    feeds = example_inputs(at_opt, seed=0)
    names, expected = run_onnxruntime(INPUTS["model"], feeds, optimize=False)
got = dict(zip(*run_onnxruntime("model.onnx", feeds, optimize=False)))
failed = False
for name, want in zip(names, expected):
    have = got.get(name)
    if have is None or have.shape != want.shape:
        print(f"output {{name!r}}: shape {{None if have is None else list(have.shape)}}, the original's {{list(want.shape)}}")
        failed = True
        continue
    rel_l2 = _rel_l2(have, want)
    ok = np.allclose(have, want, rtol=1e-4, atol=1e-5, equal_nan=True) or rel_l2 <= REL_L2_NOISE
    print(f"output {{name!r}}: relative L2 error {{rel_l2:.1e}}{{'' if ok else '  DIFFERS'}}")
    failed |= not ok
sys.exit(1 if failed else 0)
'''
