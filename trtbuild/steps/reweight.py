"""The export step when only weights moved: the last exported graph with the new weights, checked against
the framework, instead of a new export (trtbuild.execution.weights_only decides when it is tried).

The last export's files come linked into job.context["weights_only"]["from"]; a reason for a full export
(a weight that changed shape, a graph the optimizer makes differently, outputs that disagree) is returned
as a string and the step exports as usual.
"""

from __future__ import annotations

from pathlib import Path

from trtbuild.frontends import ModelSpec

TEMPLATE = "graph-template.onnx"  # the exporter's graph before optimization, weights by name (torch_template)
# Outputs of the swapped graph against the framework with the new weights: the parity step's defaults.
ATOL, RTOL, MAX_RELATIVE_ERROR = 1e-4, 1e-3, 1e-5


def supported(framework: str) -> bool:
    from trtbuild.frontends.registry import find

    found = find(framework) if framework else None
    return found is not None and found.weights_only


def template_capture(spec: ModelSpec):
    """A context manager keeping the dynamo exporter's graph at `spec.graph_template` while it exports."""
    import contextlib

    if spec.graph_template is None or not supported(spec.framework):
        return contextlib.nullcontext()
    from trtbuild.frontends.torch_template import capture

    return capture(spec.graph_template)


def attempt(model, spec: ModelSpec, previous: Path, out: Path, seed: int, framework) -> tuple[dict | None, str]:
    """(meta, "") when the new weights went into the last export's graph and its outputs agree with the
    framework's; else (None, why a full export is needed). `previous`: the last export's files.
    meta["reference"]: (feeds, outputs), the framework's run on the parity inputs, for reference.npz."""
    from trtbuild.frontends.torch_template import NotWeightsOnly, reweight
    from trtbuild.models.onnx_io import complete_inputs
    from trtbuild.models.tensors import compare, example_inputs, run_onnxruntime

    try:
        found = reweight(previous / TEMPLATE, previous / "model.onnx", model.state_dict(), out)
    except NotWeightsOnly as exc:
        return None, str(exc)
    spec.inputs = complete_inputs(out, spec.inputs)
    feeds = example_inputs(spec.inputs, seed, spec.data)
    expected = framework.predict(model, spec, feeds)
    names, actual = run_onnxruntime(out, feeds)
    rows = compare(names, expected, actual, ATOL, RTOL, rel_l2_passes=MAX_RELATIVE_ERROR)
    wrong = [r for r in rows if not r["ok"]]
    if wrong:
        detail = wrong[0].get("error") or f"max abs error {wrong[0]['max_abs']:.2g}"
        return None, (f"the last graph with the new weights disagrees with {spec.framework} on output "
                      f"{wrong[0]['output']!r} ({detail}): a weight folded into the graph")
    worst = max((r.get("rel_l2") or 0.0 for r in rows), default=0.0)
    _remember(model, spec, feeds, expected)
    return {"weights": found["weights"], "swap": found["swap"], "max_relative_error": float(worst),
            "reference": (feeds, expected)}, ""


def _remember(model, spec: ModelSpec, feeds: dict, expected: dict) -> None:
    """The framework's run on these feeds, kept where predict() looks first (a trace's run), so the runs
    at every profile shape that follow do not run the model again at opt."""
    if isinstance(expected, dict) and all(n in expected for n in getattr(model, "names", ())):
        model.traced = ([feeds[n] for n in spec.inputs], [expected[n] for n in model.names])


def clear(outdir: Path) -> None:
    """What a failed attempt left in the output folder: the full export starts from an empty one."""
    for leftover in outdir.iterdir():
        leftover.unlink()
