"""export: a PyTorch, TensorFlow or Keras model -> ONNX, plus, where parity is on, the framework's own
outputs on the parity inputs (reference.npz), computed while the model is loaded so parity needs no
framework. With parity off no forward pass is spent on them (the `reference` parameter is None)."""

from __future__ import annotations

from trtbuild.errors import first_line
from trtbuild.frontends import ModelSpec
from trtbuild.frontends.registry import BUILT_IN, framework as framework_of
from trtbuild.models.onnx_io import complete_inputs, normalize_file
from trtbuild.steps import AT_OPT, Job, Reads, reweight

NAME = "export"
MAIN_OUTPUT = "model.onnx"
EXTERNAL_DATA = True  # other files: the model's external data
READS = Reads(params=("framework", "opset", "inputs", "entrypoint", "args", "kwargs", "exporter", "package", "outputs",
               "inputs_as_nchw", "input_order", "reference", "ranges"),
              files=("model", "checkpoint", "code", "data"), context=("python_path", "where", "weights_only"),
              env=tuple(dict.fromkeys(p for f in BUILT_IN.values() for p in f.env)))  # env(params): the framework's
IMPORTS = ("numpy", "onnx", "onnxruntime")  # a spare worker loads these before this step comes
REFERENCE = "reference.npz"
REFERENCE_ERROR = "reference-error.txt"  # instead of REFERENCE, when the framework's run failed
OPTIONAL_OUTPUTS = (REFERENCE, REFERENCE_ERROR)
ONNX_FILES = (MAIN_OUTPUT, f"{MAIN_OUTPUT}.data")  # what steps after export read (see onnx_io)
TEMPLATE = reweight.TEMPLATE  # kept for the next weights-only rebuild (steps.reweight)
FRESH_PROCESS = True  # it imports the user's model code and a framework


def tools(params: dict) -> tuple[str, ...]:
    found = framework_of(params["framework"]).tools
    if params.get("ranges"):
        found += ("onnxruntime",)  # it runs the model at every profile's min / opt / max
    if params.get("exporter") in ("dynamo", "auto"):
        found += ("onnxscript", "onnx-ir")  # the dynamo exporter writes the model through onnx-ir
    if params.get("package"):  # e.g. torchvision for "torchvision.models:resnet50"
        found += (params["package"],)
    return found


def preload(params: dict) -> tuple[str, ...]:
    """What the worker imports before it starts watching what the user's code reads."""
    return (framework_of(params["framework"]).preload + ((params["package"],) if params.get("package") else ())
            + (("onnxruntime",) if params.get("ranges") else ()))


def env(params: dict) -> tuple[str, ...]:
    """Only the recipe's framework's variables: a PyTorch export is not rekeyed by TF_ settings."""
    return framework_of(params["framework"]).env


def model_spec(job: Job) -> ModelSpec:
    p = job.params
    return ModelSpec(
        framework=p["framework"], opset=p["opset"], inputs=p["inputs"], path=job.inputs.get("model"),
        entrypoint=p["entrypoint"], args=p["args"], kwargs=p["kwargs"], checkpoint=job.inputs.get("checkpoint"),
        exporter=p["exporter"], outputs=p["outputs"], inputs_as_nchw=p["inputs_as_nchw"],
        python_path=job.context["python_path"], where=job.context.get("where", {}), data=job.inputs.get("data"),
        reference=p["reference"] is not None,
    )


def run(job: Job) -> dict:
    from trtbuild.models.tensors import example_inputs  # numpy: only in the worker

    spec = model_spec(job)
    framework = framework_of(spec.framework).load()
    model = framework.load(spec)
    out = job.outdir / MAIN_OUTPUT
    reference = job.params["reference"]
    meta, outputs, fallback = _weights_only(job, framework, model, spec, out, reference)
    if meta is None:
        meta = _export(job, framework, model, spec, out)
        if fallback:
            meta["weights_only"] = {"fallback": fallback}
    if job.params.get("ranges"):
        spec.inputs = complete_inputs(out, spec.inputs)  # dtypes and inputs the recipe left to the model
        meta["shapes_run"] = _run_at_every_shape(job, spec, framework, model, out)
    if reference is None:
        return meta
    if outputs is None:
        spec.inputs = complete_inputs(out, spec.inputs)  # dtypes and inputs the recipe left to the model
        feeds = example_inputs(spec.inputs, reference["seed"], job.inputs.get("data"))
        try:
            outputs = feeds, framework.predict(model, spec, feeds)
        except Exception as exc:  # parity, when on, fails with this; the ONNX model stands without it
            (job.outdir / REFERENCE_ERROR).write_text(f"the {spec.framework} model failed on the parity inputs: "
                                                      f"{type(exc).__name__}: {first_line(exc)[:500]}")
            return meta
    save_reference(job.outdir / REFERENCE, *outputs)
    return meta  # the model's opset and I/O: the check step's report, which loads it anyway


def _run_at_every_shape(job: Job, spec: ModelSpec, framework, model, out) -> list[str]:
    """The exported model in ONNX Runtime at every profile's min / opt / max, and against the framework
    there where its outputs are wanted: a shape the model cannot serve is a recipe error, not an engine."""
    from trtbuild.models import shape_runs

    reference = job.params["reference"]
    predict = (lambda feeds: framework.predict(model, spec, feeds)) if reference is not None else None
    seed = reference["seed"] if reference is not None else 0
    return shape_runs.check(out, spec.inputs, job.params["ranges"], seed, spec.data, spec.at, predict,
                            traced_at_opt=framework_of(spec.framework).traced_at_opt)


def _export(job: Job, framework, model, spec: ModelSpec, out) -> dict:
    """A full export; the dynamo exporter's graph is kept for the next weights-only rebuild."""
    spec.graph_template = job.outdir.parent / TEMPLATE if reweight.supported(spec.framework) else None
    with reweight.template_capture(spec):
        meta = framework.export(model, spec, out)
    if any(p != out for p in job.outdir.iterdir()):
        normalize_file(out)  # the exporter wrote external data; keep one file when it fits
    if spec.graph_template is not None and spec.graph_template.exists():
        if meta.get("exporter") == "dynamo" and "fallback" not in meta:
            spec.graph_template.rename(job.outdir / TEMPLATE)
        else:
            spec.graph_template.unlink()
    return meta


def _weights_only(job: Job, framework, model, spec: ModelSpec, out, reference) -> tuple[dict | None, tuple | None, str]:
    """When the runner found only weights moved (job.context["weights_only"]: the last export's key, meta
    and files): the last export's graph with the new weights, as (meta, the framework's run on the parity
    inputs, ""); else (None, None, why a full export is needed, or "" when none was planned)."""
    planned = job.context.get("weights_only")
    if not planned:
        return None, None, ""
    from pathlib import Path

    seed = reference["seed"] if reference is not None else 0
    done, why = reweight.attempt(model, spec, Path(planned["from"]), out, seed, framework)
    if done is None:
        reweight.clear(job.outdir)
        return None, None, why
    (job.outdir / TEMPLATE).write_bytes((Path(planned["from"]) / TEMPLATE).read_bytes())
    feeds_outputs = done.pop("reference")
    return planned["meta"] | {"weights_only": done | {"from": planned["key"]}}, feeds_outputs, ""


def save_reference(path, feeds: dict, outputs) -> None:
    """Inputs under `in:<name>`; outputs under `out:<name>` (by name) or `out#<index>` (in order)."""
    import numpy as np

    arrays = {f"in:{n}": a for n, a in feeds.items()}
    if isinstance(outputs, dict):
        arrays |= {f"out:{n}": a for n, a in outputs.items()}
    else:
        arrays |= {f"out#{i}": a for i, a in enumerate(outputs)}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_reference(path) -> tuple[dict, dict | list]:
    import numpy as np

    with np.load(path) as npz:
        feeds = {k[3:]: npz[k] for k in npz.files if k.startswith("in:")}
        named = {k[4:]: npz[k] for k in npz.files if k.startswith("out:")}
        ordered = [npz[k] for k in sorted((k for k in npz.files if k.startswith("out#")), key=lambda k: int(k[4:]))]
    return feeds, (named or ordered)


AFTER = ()


def plan(p):
    """For a framework source: its model exported to ONNX, which the next steps read."""
    loaded, recipe, source = p.loaded, p.recipe, p.recipe.source
    if source.framework == "onnx":
        return None
    framework = framework_of(source.framework)
    framework.require()
    search = [loaded.resolve(f) for f in source.python_path]
    files: dict = {}
    if source.path:
        files["model"] = p.files(p.sources.tree_files(loaded.source_path(), loaded.where("source", "path"),
                                                      source.allow_outside_files), main=loaded.source_path())
    if source.checkpoint:
        files["checkpoint"] = p.files([loaded.resolve(source.checkpoint)])
    code, package = [], None
    if source.entrypoint:
        module = source.entrypoint.split(":")[0]
        code.append(p.sources.module_file(module, search, "source.entrypoint"))
        package = p.sources.distribution_of(module, code[0])
        if package is None:  # the user's code (or an editable install's): the modules it imports are inputs too
            code += p.sources.user_imports(code[0], [*search, p.sources.package_folder(module, code[0])],
                                           p.cache.stat_cache)
    code += p.sources.glob_files(loaded.file.parent, source.deps)
    if code:
        files["code"] = p.files(code)
    # The framework's outputs on the parity inputs are computed during export, where parity is on: with
    # it off no forward pass is spent on them (switching parity on reruns the export).
    parity = recipe.parity
    files |= p.parity_data
    params = {
        "framework": source.framework, "opset": recipe.onnx.opset or framework.default_opset,
        "inputs": p.read(*AT_OPT),  # which dims are dynamic, not their range
        "entrypoint": source.entrypoint, "args": source.args, "kwargs": source.kwargs,
        "exporter": source.exporter if framework.exporters else None,
        "package": package,  # its version goes into the key with the other tools
        "outputs": source.outputs, "inputs_as_nchw": source.inputs_as_nchw,
        "input_order": list(p.inputs),  # PyTorch binds a lone input, or a TorchScript model's, by position
        "reference": {"seed": parity.seed} if parity.enabled else None,
        "ranges": p.ranges,  # a new min or max reruns the export: it runs the model there
    }
    step = p.step(NAME, params, files, context={"python_path": [str(f) for f in search], "where": p.where()})
    p.model = p.pick(step, ONNX_FILES)  # not reference.npz: float noise there must not rebuild anything
    return step
