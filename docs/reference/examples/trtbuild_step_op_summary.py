"""How many nodes of each op the simplified model has, the `top` most common first, as ops.json.

A plug-in step kind: this module, found by its name (trtbuild_step_op_summary) on the Python path,
runs for a recipe that asks for it with `steps: {op_summary: {top: 3}}`."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

from trtbuild.steps import Job, Reads

NAME = "op_summary"
MAIN_OUTPUT = "ops.json"
READS = Reads(params=("top",), files=("model",))  # exactly what its key holds
AFTER = ("simplify",)  # planned once simplify is: it reads the model simplify leaves


class PARAMS(BaseModel):
    """Its entry under the recipe's `steps`: a mistake is reported at its line."""

    model_config = ConfigDict(extra="forbid")
    top: int = Field(default=5, ge=1, description="how many of the most common ops to list")


def tools(params: dict) -> tuple[str, ...]:
    return ("onnx",)  # its version goes into the key


def plan(p, params: PARAMS):
    """One step per recipe, on the model as simplify left it (the recipe's own where simplify is off)."""
    return p.step(NAME, {"top": params.top}, {"model": p.model_after("simplify")})


def run(job: Job) -> dict:
    from collections import Counter

    import onnx

    model = onnx.load(str(job.inputs["model"]), load_external_data=False)
    ops = Counter(node.op_type for node in model.graph.node)
    summary = {"nodes": sum(ops.values()), "top": [[op, count] for op, count in ops.most_common(job.params["top"])]}
    (job.outdir / MAIN_OUTPUT).write_text(json.dumps(summary, indent=2))
    return {"summary": summary}
