"""parity: ONNX Runtime (CPU) on the exported model agrees with the framework's reference outputs."""

from __future__ import annotations

import json

from trtbuild.errors import StepError
from trtbuild.steps import Job, Reads
from trtbuild.steps.export import REFERENCE, REFERENCE_ERROR, load_reference

NAME = "parity"
MAIN_OUTPUT = "parity.json"
READS = Reads(params=("atol", "rtol", "max_relative_error", "outputs", "framework", "inputs_from"),
              files=("onnx",), context=())
IMPORTS = ("numpy", "onnxruntime")  # a spare worker loads these before this step comes


def tools(params: dict) -> tuple[str, ...]:
    return ("onnxruntime", "numpy")


def run(job: Job) -> dict:
    from trtbuild.models.tensors import compare, degenerate, format_table, run_onnxruntime  # numpy: only in the worker

    onnx_path = job.inputs["onnx"]
    reference = onnx_path.parent / REFERENCE
    if not reference.exists():
        failed = onnx_path.parent / REFERENCE_ERROR
        why = failed.read_text() if failed.exists() else "the export wrote none"
        raise StepError(f"no {job.params['framework']} reference outputs to compare with: {why}")
    feeds, expected = load_reference(reference)
    names, actual = run_onnxruntime(onnx_path, feeds)
    p = job.params
    atol, rtol, per_output = p["atol"], p["rtol"], p["outputs"]
    unknown = sorted(set(per_output) - set(names))
    if unknown:
        raise StepError(f"parity.outputs names {unknown}, which the model does not have (its outputs: "
                        f"{', '.join(names)})", user_error=True)
    rows = compare(names, expected, actual, atol, rtol, rel_l2_passes=p["max_relative_error"] or None,
                   per_output=per_output)
    result = {"atol": atol, "rtol": rtol, "max_relative_error": p["max_relative_error"], "inputs": p["inputs_from"],
              "outputs": rows}
    if not all(r["ok"] for r in rows):
        raise StepError(f"ONNX Runtime disagrees with {p['framework']}:\n{format_table(rows, atol, rtol)}\n"
                        f"(an output passes within atol / rtol everywhere, or with a relative L2 error <= "
                        f"{p['max_relative_error']:g}: parity.max_relative_error; per output: parity.outputs)",
                        details={"parity": result})
    warnings = [f"parity proves nothing for it: {what} on the parity inputs ({p['inputs_from']}); give inputs "
                "on which the model finds something with parity.data (a .npz keyed by input name)"
                for what in degenerate(names, expected)]
    warnings += [f"output {r['output']!r}: {r['mismatched']} elements outside atol / rtol; it passes on its relative "
                 f"L2 error {r['rel_l2']:.1e}" for r in rows if not (r.get("mismatched") or "0/").startswith("0/")]
    (job.outdir / MAIN_OUTPUT).write_text(json.dumps(result, indent=2))
    return {"parity": result, "warnings": warnings}


AFTER = ("check", "export")
GATE = True  # an engine waits for it


def plan(p):
    """For an exported model, with parity on: ONNX Runtime against the framework's outputs."""
    export, parity = p.first("export"), p.recipe.parity
    if export is None or not parity.enabled:
        return None
    params = {"atol": parity.atol, "rtol": parity.rtol, "framework": p.recipe.source.framework,
              "max_relative_error": parity.max_relative_error,
              "outputs": {n: t.model_dump(exclude_none=True) for n, t in sorted(parity.outputs.items())},
              "inputs_from": parity.data or f"random, seed {parity.seed}"}
    return p.step(NAME, params, {"onnx": export}, after=[p.first("check")])
