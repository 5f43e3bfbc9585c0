"""verify: the engine and ONNX Runtime on the fp32 model agree on the same inputs: within atol /
rtol for fp32 engines, within the precision's relative L2 error for the others. Needs a GPU that
runs the engine; elsewhere the graph marks this step skipped with the reason."""

from __future__ import annotations

import json
import os

from trtbuild.errors import StepError
from trtbuild.steps import AT_OPT, Job, Reads, at_each_profile, use_gpu_of
from trtbuild.backends import backend
from trtbuild.backends.target import target_from_dict

NAME = "verify"
MAIN_OUTPUT = "verify.json"
READS = Reads(params=("inputs", "target", "atol", "rtol", "max_relative_error", "seed", "float_noise", "outputs",
                      "profiles"),
              files=("plan", "onnx", "data"), context=("cuda_device",))
IMPORTS = ("numpy", "onnxruntime")  # a spare worker loads these before this step comes
FRESH_PROCESS = True  # Polygraphy binds TensorRT or TensorRT-RTX once per process (see run)


def tools(params: dict) -> tuple[str, ...]:
    return ("onnxruntime", "polygraphy", "numpy")


def run(job: Job) -> dict:
    from trtbuild.models.onnx_io import complete_inputs
    from trtbuild.models.tensors import compare, example_inputs, format_table, run_onnxruntime  # numpy: only in the worker

    gpu = use_gpu_of(job)
    target = target_from_dict(job.params["target"])
    # Polygraphy picks its TensorRT module from this variable when first imported.
    chosen = backend(target.backend)
    os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if chosen.POLYGRAPHY_RTX else "0"
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    atol, rtol, limit = job.params["atol"], job.params["rtol"], job.params["max_relative_error"]
    rows, failures = [], []
    with TrtRunner(EngineFromBytes(job.inputs["plan"].read_bytes())) as runner:
        # Each optimization profile at its opt shapes (the recipe's data, if any, feeds the first).
        for index, name, specs in at_each_profile(job.params["inputs"], job.params["profiles"]):
            inputs = complete_inputs(job.inputs["onnx"], specs)
            feeds = example_inputs(inputs, job.params["seed"], job.inputs.get("data") if index == 0 else None)
            names, expected = run_onnxruntime(job.inputs["onnx"], feeds)
            if name is not None:
                runner.set_profile(index)
            outputs = runner.infer(feeds)
            # fp32 engines: atol / rtol, or parity's relative L2 allowance for float noise; per output as parity says.
            found = compare(names, expected, [outputs[n] for n in names], atol, rtol, max_rel_l2=limit,
                            rel_l2_passes=job.params["float_noise"] or None, per_output=job.params["outputs"])
            rows += [r | {"profile": name} for r in found] if name is not None else found
            if not all(r["ok"] for r in found):
                label = f"profile {index} ({name})" if name is not None else "the engine"
                failures.append(f"{label}:\n{format_table(found, atol, rtol, limit)}")
    result = {"atol": atol, "rtol": rtol, "max_relative_error": limit, "backend": chosen.MODULE,
              "gpu": gpu, "outputs": rows}
    if failures:
        raise StepError("the engine disagrees with ONNX Runtime at " + "\n".join(failures), details={"verify": result})
    (job.outdir / MAIN_OUTPUT).write_text(json.dumps(result, indent=2))
    return {"verify": result}


AFTER = ("engine",)


def plan(p):
    """For each engine: the plan against ONNX Runtime on the fp32 model, on a GPU that runs it (else skipped)."""
    recipe, limit = p.recipe, p.max_relative_error
    steps = []
    for engine in p.all("engine"):
        target = engine.target
        runs_on, cannot_run = p.machine.runner(target, recipe.engine.precision)
        params = {"inputs": p.read(*AT_OPT), "target": target.to_dict(), "atol": recipe.parity.atol,
                  "rtol": recipe.parity.rtol, "max_relative_error": limit, "seed": recipe.parity.seed,
                  "float_noise": recipe.parity.max_relative_error if limit is None else None,
                  "outputs": {} if limit is not None else
                  {n: t.model_dump(exclude_none=True) for n, t in sorted(recipe.parity.outputs.items())},
                  "profiles": p.profile_opts}
        steps.append(p.step(NAME, params, {"plan": p.pick(engine, ("model.plan",)), "onnx": p.model_after("simplify")}
                            | p.parity_data, engine.publish_dir, target=target, context=runs_on,
                            skip_reason=engine.skip_reason or cannot_run))
    return steps
