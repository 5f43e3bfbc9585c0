"""simplify: onnx-simplifier (constant folding, shape simplification), verified with ONNX Runtime."""

from __future__ import annotations

from trtbuild.errors import StepError
from trtbuild.onnx_io import save_onnx
from trtbuild.steps import Job

NAME = "simplify"
VERSION = 1
MAIN_OUTPUT = "model.onnx"


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
    # Dynamic inputs are checked at their `opt` shape; the simplified model keeps them dynamic.
    test_shapes = {name: spec["opt"] for name, spec in job.params["inputs"].items() if -1 in spec["shape"]}
    output = job.outdir / "model.onnx"
    note = "outputs compared with the original model on ONNX Runtime (1 random input)"
    try:
        simplified, same = onnxsim.simplify(str(source), check_n=1, test_input_shapes=test_shapes)
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            raise StepError(f"onnx-simplifier failed: {str(exc).strip().splitlines()[-1]}") from None
        # ONNX Runtime cannot run this model (e.g. a TensorRT plugin op): simplify without the check.
        note = f"not compared: ONNX Runtime cannot run the model ({str(exc).strip().splitlines()[0][:200]})"
        simplified, same = onnxsim.simplify(str(source), check_n=0, test_input_shapes=test_shapes)
    if not same:
        raise StepError("onnx-simplifier changed the model's outputs; set onnx.simplify: false in the recipe")
    save_onnx(simplified, output)
    return {"nodes_before": len(before.graph.node), "nodes_after": len(simplified.graph.node), "verification": note}
