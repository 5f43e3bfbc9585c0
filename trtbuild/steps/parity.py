"""parity: ONNX Runtime (CPU) on the exported model agrees with the framework's reference outputs."""

from __future__ import annotations

import json

from trtbuild.errors import StepError
from trtbuild.steps import Job, Reads
from trtbuild.steps.export import REFERENCE, load_reference

NAME = "parity"
MAIN_OUTPUT = "parity.json"
READS = Reads(params=("atol", "rtol", "framework", "inputs_from"),
              files=("onnx",), context=())
IMPORTS = ("numpy", "onnxruntime")  # a spare worker loads these before this step comes


def tools(params: dict) -> tuple[str, ...]:
    return ("onnxruntime", "numpy")


def run(job: Job) -> dict:
    from trtbuild.models.tensors import compare, format_table, run_onnxruntime  # numpy: only in the worker

    onnx_path = job.inputs["onnx"]
    feeds, expected = load_reference(onnx_path.parent / REFERENCE)
    names, actual = run_onnxruntime(onnx_path, feeds)
    atol, rtol = job.params["atol"], job.params["rtol"]
    rows = compare(names, expected, actual, atol, rtol)
    result = {"atol": atol, "rtol": rtol, "inputs": job.params["inputs_from"], "outputs": rows}
    if not all(r["ok"] for r in rows):
        raise StepError(f"ONNX Runtime disagrees with {job.params['framework']}:\n{format_table(rows, atol, rtol)}",
                        details={"parity": result})
    (job.outdir / MAIN_OUTPUT).write_text(json.dumps(result, indent=2))
    return {"parity": result}
