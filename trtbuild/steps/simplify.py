"""simplify: onnx-simplifier (constant folding, shape simplification), verified with ONNX Runtime.

A model the simplifier cannot handle (or whose outputs it would change) passes through unchanged
with a warning: the engine builder, not this optimization, decides whether a model builds."""

from __future__ import annotations

import traceback

from trtbuild.errors import first_line
from trtbuild.onnx_io import save_onnx
from trtbuild.steps import Job, Reads

NAME = "simplify"
MAIN_OUTPUT = "model.onnx"
READS = Reads(params=("inputs",),
              files=("model",), context=())


def tools(params: dict) -> tuple[str, ...]:
    return ("onnx", "onnxsim", "onnxruntime")


def run(job: Job) -> dict:
    import sys

    import onnx

    # onnxsim imports torch (3 s) only for an optional PPQ bridge this step never uses. Blocked for
    # the import only: the worker may later run a step that does need torch.
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None
    try:
        import onnxsim
    finally:
        if blocked:
            del sys.modules["torch"]

    source = job.inputs["model"]
    before = onnx.load(str(source), load_external_data=False)
    # Inputs the recipe sets are checked at their `opt` shape; the simplified model keeps them dynamic.
    test_shapes = {name: spec["opt"] for name, spec in job.params["inputs"].items()}
    output = job.outdir / "model.onnx"
    note, warnings = "outputs compared with the original model on ONNX Runtime (1 random input)", []
    try:
        try:
            simplified, same = onnxsim.simplify(str(source), check_n=1, test_input_shapes=test_shapes)
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            ort_error = _ort_error(source, job.params["inputs"])
            if ort_error is None:  # the original runs: the simplified model is what ONNX Runtime refuses
                raise ValueError(f"ONNX Runtime cannot run the simplified model ({first_line(exc)[:200]})") from exc
            # Nor the original (a TensorRT plugin op, say): simplify without the check, and say so.
            note = f"not compared: ONNX Runtime cannot run the model ({ort_error[:200]})"
            warnings.append(f"the simplified model was not checked: {note[len('not compared: '):]}")
            simplified, same = onnxsim.simplify(str(source), check_n=0, test_input_shapes=test_shapes)
        if not same:
            raise ValueError("the simplified model's outputs differ from the original's on ONNX Runtime")
    except Exception as exc:
        # Simplifying is an optimization: a model onnx-simplifier cannot handle goes to the builder as given.
        traceback.print_exc()
        save_onnx(onnx.load(str(source)), output)
        warning = (f"onnx-simplifier could not simplify the model ({type(exc).__name__}: {first_line(exc)[:300]}); "
                   "the engine is built from the model as given")
        return {"nodes_before": len(before.graph.node), "nodes_after": len(before.graph.node),
                "simplified": False, "warnings": [warning]}
    save_onnx(simplified, output)
    return {"nodes_before": len(before.graph.node), "nodes_after": len(simplified.graph.node), "simplified": True,
            "verification": note, "warnings": warnings}


def _ort_error(model_path, recipe_inputs: dict) -> str | None:
    """Why ONNX Runtime cannot run the model once on example inputs at opt; None when it can."""
    from trtbuild.onnx_io import complete_inputs
    from trtbuild.tensors import example_inputs, run_onnxruntime

    try:
        run_onnxruntime(model_path, example_inputs(complete_inputs(model_path, recipe_inputs), seed=0))
    except Exception as exc:
        return first_line(exc)
    return None

