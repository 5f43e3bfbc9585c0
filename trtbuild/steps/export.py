"""export: a PyTorch, TensorFlow or Keras model -> ONNX."""

from __future__ import annotations

from trtbuild.frameworks import TOOLS, ModelSpec, load_framework
from trtbuild.onnx_io import normalize_file
from trtbuild.sources import distribution_of
from trtbuild.steps import Job

NAME = "export"
VERSION = 1
MAIN_OUTPUT = "model.onnx"


def tools(params: dict) -> tuple[str, ...]:
    found = TOOLS[params["framework"]]
    if params.get("exporter") == "dynamo":
        found += ("onnxscript",)
    if params.get("entrypoint"):  # e.g. torchvision for "torchvision.models:resnet50"
        dist = distribution_of(params["entrypoint"].split(":")[0])
        found += (dist,) if dist else ()
    return found


def model_spec(job: Job) -> ModelSpec:
    """The ModelSpec of an export or parity job (parity reloads the same model)."""
    p = job.params
    return ModelSpec(
        framework=p["framework"], opset=p["opset"], inputs=p["inputs"], path=job.inputs.get("model"),
        entrypoint=p["entrypoint"], args=p["args"], kwargs=p["kwargs"], checkpoint=job.inputs.get("checkpoint"),
        exporter=p["exporter"], outputs=p["outputs"], inputs_as_nchw=p["inputs_as_nchw"],
        python_path=job.context["python_path"],
    )


def run(job: Job) -> dict:
    import onnx

    spec = model_spec(job)
    framework = load_framework(spec.framework)
    out = job.outdir / MAIN_OUTPUT
    meta = framework.export(framework.load(spec), spec, out)
    normalize_file(out)
    model = onnx.load(str(out), load_external_data=False)
    meta["opset"] = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
    meta["inputs"] = [i.name for i in model.graph.input]
    meta["outputs"] = [o.name for o in model.graph.output]
    return meta
