"""parity: the source framework and ONNX Runtime (CPU) agree on the same inputs."""

from __future__ import annotations

import json

from trtbuild.errors import StepError
from trtbuild.frameworks import load_framework
from trtbuild.steps import Job, export
from trtbuild.tensors import compare, example_inputs, format_table, run_onnxruntime

NAME = "parity"
VERSION = 1
MAIN_OUTPUT = "parity.json"


def tools(params: dict) -> tuple[str, ...]:
    return export.tools(params) + ("onnxruntime",)


def run(job: Job) -> dict:
    spec = export.model_spec(job)
    framework = load_framework(spec.framework)
    feeds = example_inputs(spec.inputs, job.params["seed"], job.inputs.get("data"))
    expected = framework.predict(framework.load(spec), spec, feeds)
    names, actual = run_onnxruntime(job.inputs["onnx"], feeds)
    atol, rtol = job.params["atol"], job.params["rtol"]
    rows = compare(names, expected, actual, atol, rtol)
    result = {"atol": atol, "rtol": rtol, "inputs": "data" if "data" in job.inputs else f"random, seed {job.params['seed']}",
              "outputs": rows}
    if not all(r["ok"] for r in rows):
        raise StepError(f"ONNX Runtime disagrees with {spec.framework}:\n{format_table(rows, atol, rtol)}",
                        details={"parity": result})
    (job.outdir / MAIN_OUTPUT).write_text(json.dumps(result, indent=2))
    return {"parity": result}
