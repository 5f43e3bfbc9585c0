"""accuracy: the gate after a precision transform. ONNX Runtime runs the fp32 model and the
transformed one on the same inputs; each output's relative error must stay under the limit.

ONNX Runtime has no bf16 kernels on the CPU, so a bf16 model is run as fp32 arithmetic on values
rounded to bf16 wherever the model stores a bf16 tensor (TensorRT's bf16 kernels accumulate in fp32)."""

from __future__ import annotations

import json
from pathlib import Path

from trtbuild.recipes.shared import QUANTIZED_PRECISIONS
from trtbuild.errors import StepError
from trtbuild.models.onnx_io import save_onnx
from trtbuild.steps import AT_OPT, Job, Reads, at_each_profile

NAME = "accuracy"
MAIN_OUTPUT = "accuracy.json"
READS = Reads(params=("inputs", "precision", "max_relative_error", "seed", "profiles", "ranges"),
              files=("fp32", "model", "data"), context=())
IMPORTS = ("numpy", "onnx", "onnxruntime")  # a spare worker loads these before this step comes


def tools(params: dict) -> tuple[str, ...]:
    return ("onnxruntime", "numpy")


def run(job: Job) -> dict:
    from trtbuild.models.onnx_io import complete_inputs
    from trtbuild.models.tensors import (compare, degenerate, example_inputs, format_table,  # numpy: in the worker
                                         run_onnxruntime)

    model = job.inputs["model"]
    if job.params["precision"] == "bf16":
        model = _bf16_rounded_in_fp32(model, job.outdir.parent / "bf16-emulated.onnx")
    limit = job.params["max_relative_error"]
    rows = []
    # At each optimization profile's opt shapes (the recipe's data, if any, feeds the first).
    for index, name, specs in at_each_profile(job.params["inputs"], job.params["profiles"]):
        inputs = complete_inputs(job.inputs["fp32"], specs)
        feeds = example_inputs(inputs, job.params["seed"], job.inputs.get("data") if index == 0 else None)
        names, expected = run_onnxruntime(job.inputs["fp32"], feeds)
        _, actual = run_onnxruntime(model, feeds, optimize=False)
        found = compare(names, expected, actual, atol=0.0, rtol=0.0, max_rel_l2=limit)
        rows += [r | {"profile": name} for r in found] if name is not None else found
    result = {"precision": job.params["precision"], "max_relative_error": limit, "outputs": rows}
    outside = uncalibrated(job.inputs["model"].parent, job.params.get("ranges"))
    failed = [r for r in rows if not r["ok"]]
    if failed:
        worst = failed[0]
        at = f" at profile {worst['profile']!r}" if "profile" in worst else ""
        error = f"relative error {worst['rel_l2']:.3g}" if worst.get("rel_l2") is not None else worst.get("error")
        # the first line stands alone (the run's recap shows it): which output, where, and what to do
        raise StepError(
            f"{job.params['precision']} model is less accurate than allowed: output {worst['output']!r}{at}, "
            f"{error} > {limit}" + (f" ({len(failed) - 1} more below)" if len(failed) > 1 else "")
            + ("; " + "; ".join(outside) if outside else "")
            + "; raise precision.max_relative_error or keep sensitive ops in fp32 with precision.keep_fp32\n"
            + format_table(rows, max_rel_l2=limit),
            details={"accuracy": result},
        )
    (job.outdir / MAIN_OUTPUT).write_text(json.dumps(result, indent=2))
    warnings = [f"the accuracy gate proves nothing for it: {what} on the fp32 model; give inputs on which the "
                "model finds something with parity.data (a .npz keyed by input name)" for what in degenerate(names, expected)]
    warnings += outside
    return {"accuracy": result, "warnings": warnings}


def uncalibrated(folder: Path, ranges: list[dict] | None) -> list[str]:
    """For an int8 / fp8 model: each profile whose range of a dynamic dim leaves the sizes calibrated (its
    scales were measured on other shapes: a long sequence's activations may not fit them)."""
    from trtbuild.models.calibration_files import outside
    from trtbuild.steps.precision import CALIBRATION_SHAPES

    path = folder / CALIBRATION_SHAPES
    if not ranges or not path.is_file():
        return []
    return outside(ranges, json.loads(path.read_text()))


def _bf16_rounded_in_fp32(source: Path, scratch: Path) -> Path:
    """A copy of a bf16 model that ONNX Runtime's CPU kernels run: bf16 weights widened to fp32
    (exact), and every bf16 tensor a node produces (or the model takes) rounded to bf16 and widened back."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def round_trip(src: str, dst: str) -> list:
        return [helper.make_node("Cast", [src], [dst + "/bf16"], to=TensorProto.BFLOAT16),
                helper.make_node("Cast", [dst + "/bf16"], [dst], to=TensorProto.FLOAT)]

    model = onnx.shape_inference.infer_shapes(onnx.load(str(source)))
    graph = model.graph
    typed = [*graph.input, *graph.value_info, *graph.output]
    rounded = {v.name for v in typed if v.type.tensor_type.elem_type == TensorProto.BFLOAT16}
    for value in typed:
        if value.name in rounded:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    tensors = [*graph.initializer, *(a.t for n in graph.node for a in n.attribute if a.HasField("t"))]
    for tensor in tensors:
        if tensor.data_type == TensorProto.BFLOAT16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    nodes = []
    for value in graph.input:  # fed fp32, rounded on the way in
        if value.name in rounded:
            nodes += round_trip(value.name, value.name + "/rounded")
            for node in graph.node:
                node.input[:] = [value.name + "/rounded" if i == value.name else i for i in node.input]
    for node in graph.node:
        nodes.append(node)
        for i, name in enumerate(node.output):
            if name in rounded:
                node.output[i] = name + "/fp32"
                nodes += round_trip(name + "/fp32", name)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale; ONNX Runtime infers the types again
    save_onnx(model, scratch)
    return scratch


AFTER = ("precision",)
GATE = True  # an engine waits for it


def plan(p):
    """Where a precision step converted the model: the converted model against the fp32 one, by relative L2
    error (int8 / fp8 also by the sizes calibrated against the profiles' ranges)."""
    precision = p.first("precision")
    if precision is None:
        return None
    recipe = p.recipe
    chosen = recipe.engine.precision
    params = {"inputs": p.read(*AT_OPT), "precision": chosen, "max_relative_error": p.max_relative_error,
              "seed": recipe.parity.seed, "profiles": p.profile_opts,
              "ranges": p.ranges if chosen in QUANTIZED_PRECISIONS else None}
    return p.step(NAME, params, {"fp32": p.model_after("simplify"), "model": precision} | p.parity_data,
                  p.out / chosen, after=[p.first("check")])
