"""accuracy: the gate after a precision transform. ONNX Runtime runs the fp32 model and the
transformed one on the same inputs; each output's relative error must stay under the limit."""

from __future__ import annotations

import json

from trtbuild.errors import StepError
from trtbuild.steps import Job

NAME = "accuracy"
VERSION = 1
MAIN_OUTPUT = "accuracy.json"


def tools(params: dict) -> tuple[str, ...]:
    return ("onnxruntime",)


def run(job: Job) -> dict:
    from trtbuild.tensors import compare, example_inputs, format_table, run_onnxruntime  # numpy: only in the worker

    feeds = example_inputs(job.params["inputs"], job.params["seed"], job.inputs.get("data"))
    names, expected = run_onnxruntime(job.inputs["fp32"], feeds)
    _, actual = run_onnxruntime(job.inputs["model"], feeds, optimize=False)
    limit = job.params["max_relative_error"]
    rows = compare(names, expected, actual, atol=0.0, rtol=0.0, max_rel_l2=limit)
    result = {"precision": job.params["precision"], "max_relative_error": limit, "outputs": rows}
    if not all(r["ok"] for r in rows):
        raise StepError(
            f"{job.params['precision']} model is less accurate than allowed (relative error > {limit}; "
            f"raise precision.max_relative_error or keep sensitive ops in fp32 with precision.keep_fp32):\n"
            + format_table(rows, max_rel_l2=limit),
            details={"accuracy": result},
        )
    (job.outdir / MAIN_OUTPUT).write_text(json.dumps(result, indent=2))
    return {"accuracy": result}
