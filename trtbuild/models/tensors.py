"""Inputs for parity checks and the comparison of two sets of outputs.

Shared by framework-vs-ONNX Runtime parity and ONNX Runtime-vs-engine verification.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from trtbuild.errors import StepError, first_line

def numpy_dtype(name: str) -> np.dtype:
    """A recipe / ONNX dtype name as numpy's (bfloat16 through ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def at_batch_one(inputs: dict[str, dict]) -> dict[str, dict]:
    """The input specs with a dynamic batch (the leading dim of a rank >= 2 input) set to 1 in `opt`:
    the cheapest run of the model that proves something about every batch (a structure, a rewrite).
    A rank-1 input's one dim is its length (a waveform), not a batch: it stays at opt."""
    return {name: spec | {"opt": [1, *spec["opt"][1:]]} if len(spec["shape"] or ()) >= 2 and spec["shape"][0] == -1
            else spec for name, spec in inputs.items()}


def example_inputs(inputs: dict[str, dict], seed: int, data: Path | None = None,
                   values_from: Path | None = None) -> dict[str, np.ndarray]:
    """Arrays at each input's `opt` shape: from a .npz keyed by input name, or seeded random values
    (normal floats; ones for integer or bool inputs named like a mask, zeros for token type / segment
    ids; other integers drawn from `values_from`'s array of that name, a .npz, else 0..9)."""
    if data is not None:
        return _load_npz(data, inputs)
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, spec in inputs.items():
        shape, dtype, lower = spec["opt"], numpy_dtype(spec["dtype"] or "float32"), name.lower()
        if dtype.kind == "f" or spec["dtype"] == "bfloat16":
            feeds[name] = rng.standard_normal(shape).astype(np.float32).astype(dtype)
        elif "mask" in lower:  # attention masks: attend everywhere (a row of zeros is undefined)
            feeds[name] = np.ones(shape, dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.integers(0, 2, shape).astype(np.bool_)
        elif "token_type" in lower or "segment" in lower:  # BERT's sentence A / B: most configs know 2
            feeds[name] = np.zeros(shape, dtype)
        elif dtype.kind in "iu":
            known = _values_in(values_from, name)
            feeds[name] = (rng.choice(known, shape) if known is not None else rng.integers(0, 10, shape)).astype(dtype)
        else:
            raise StepError(f"input {name!r} has type {spec['dtype']}, for which no example values can be made")
    return feeds


def _values_in(path: Path | None, name: str) -> np.ndarray | None:
    """The distinct values of array `name` in the .npz at `path` (token ids a model knows), or None."""
    if path is None:
        return None
    with np.load(path) as npz:
        return np.unique(npz[name]) if name in npz.files and npz[name].size else None


def _load_npz(path: Path, inputs: dict[str, dict]) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        missing = [n for n in inputs if n not in npz.files]
        if missing:
            raise StepError(f"parity.data {path} has no array for inputs {missing} (it has {npz.files})", user_error=True)
        feeds = {n: npz[n] for n in inputs}
    for name, array in feeds.items():
        spec = inputs[name]
        if len(array.shape) != len(spec["shape"]) or any(s not in (-1, d) for d, s in zip(array.shape, spec["shape"])):
            raise StepError(f"parity.data: {name} has shape {list(array.shape)}, the model takes {spec['shape']} "
                            "(-1: any size)", user_error=True)
    return feeds


def compare(names: list[str], expected, actual: list[np.ndarray], atol: float, rtol: float,
            max_rel_l2: float | None = None, rel_l2_passes: float | None = None,
            per_output: dict[str, dict] | None = None) -> list[dict]:
    """One row per output: max absolute / relative error, the relative L2 error ||a - e|| / ||e||, and
    whether it passes: |a - e| <= atol + rtol * |e| everywhere, or, when `max_rel_l2` is given,
    a relative L2 error within it (for lossy precisions, where single elements may stray). With
    `rel_l2_passes`, an output outside atol / rtol still passes when its relative L2 error is within it
    (float reassociation moves a few elements of a correct model past atol). `per_output`: by output
    name, {"atol", "rtol", "max_relative_error"} overriding atol, rtol and rel_l2_passes (or max_rel_l2).

    `expected` is a list in output order or a dict by output name; `actual` follows `names`.
    """
    if isinstance(expected, dict):
        unknown = [n for n in names if n not in expected]
        if unknown:
            raise StepError(f"outputs {unknown} are missing from the reference outputs {sorted(expected)}")
        expected = [expected[n] for n in names]
    if len(expected) != len(actual):
        raise StepError(f"the reference has {len(expected)} outputs, the ONNX model {len(actual)}")
    rows = []
    for name, exp, act in zip(names, expected, actual):
        exp, act = np.asarray(exp), np.asarray(act)
        row = {"output": name, "shape": list(act.shape)}
        if exp.shape != act.shape:
            rows.append(row | {"ok": False, "max_abs": None, "max_rel": None, "error": f"shape {list(exp.shape)} != {list(act.shape)}"})
            continue
        own = (per_output or {}).get(name, {})
        o_atol, o_rtol = own.get("atol", atol), own.get("rtol", rtol)
        o_l2 = own.get("max_relative_error", max_rel_l2 if max_rel_l2 is not None else rel_l2_passes)
        exp64, act64 = exp.astype(np.float64), act.astype(np.float64)
        diff = np.abs(act64 - exp64)
        rel = diff / np.maximum(np.abs(exp64), np.finfo(np.float32).tiny)
        bad = ~(diff <= o_atol + o_rtol * np.abs(exp64))  # NaN counts as a mismatch
        rel_l2 = float(np.linalg.norm(diff) / max(np.linalg.norm(exp64), np.finfo(np.float32).tiny))
        if max_rel_l2 is not None:
            ok = rel_l2 <= o_l2  # NaN fails
        else:
            ok = not bool(bad.any()) or (o_l2 is not None and rel_l2 <= o_l2)
        rows.append(row | {
            "ok": ok,
            "max_abs": float(diff.max()) if diff.size else 0.0,
            "max_rel": float(rel.max()) if rel.size else 0.0,
            "rel_l2": rel_l2,
            "mismatched": f"{int(bad.sum())}/{bad.size}" if max_rel_l2 is None else None,
        })
    return rows


def degenerate(names: list[str], outputs) -> list[str]:
    """Outputs that prove nothing on the inputs used: empty, all zero, or one value everywhere (a detector
    that found nothing, NMS that kept no box). A comparison passes on them whatever the model computes."""
    if isinstance(outputs, dict):
        outputs = [outputs.get(n) for n in names]
    found = []
    for name, value in zip(names, outputs):
        if value is None:
            continue
        value = np.asarray(value)
        if value.size == 0:
            found.append(f"output {name!r} is empty ({list(value.shape)})")
        elif value.dtype.kind in "fiub":
            flat = value.reshape(-1)
            if not flat.any():
                found.append(f"output {name!r} is all zero ({list(value.shape)})")
            elif flat.size > 1 and (flat == flat[0]).all():
                found.append(f"output {name!r} is {flat[0].item()!r} everywhere ({list(value.shape)})")
    return found


def format_table(rows: list[dict], atol: float = 0.0, rtol: float = 0.0, max_rel_l2: float | None = None) -> str:
    rule = f"relative L2 error <= {max_rel_l2:g}" if max_rel_l2 is not None else f"atol={atol:g}, rtol={rtol:g}"
    lines = [f"{'output':<24} {'shape':<18} {'max abs err':>12} {'max rel err':>12} {'rel L2 err':>11} "
             f"{'mismatched':>12}  ({rule})"]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['output']:<24} {r['error']}")
            continue
        mark = "" if r["ok"] else "  FAIL"
        lines.append(f"{r['output']:<24} {str(r['shape']):<18} {r['max_abs']:>12.3e} {r['max_rel']:>12.3e} "
                     f"{r['rel_l2']:>11.3e} {r['mismatched'] or '-':>12}{mark}")
    return "\n".join(lines)


# "[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/.../model.cc:202 onnxruntime::Model::Model(...) " before the message
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (?:\S+:\d+ \S+\(.*?\) )?")
_IR_VERSION = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")


def onnxruntime_problem(exc: BaseException) -> str:
    """ONNX Runtime's error without its source location and C++ signature; for a model newer than this
    ONNX Runtime reads, what to do about it."""
    text = _ORT_PREFIX.sub("", first_line(exc))
    found = _IR_VERSION.search(text)
    if found:
        return (f"the model's ONNX IR version is {found[1]} and this ONNX Runtime reads up to {found[2]}: save "
                f"the model with `model.ir_version = {found[2]}` (or lower) before onnx.save, or upgrade onnxruntime")
    return text


def run_onnxruntime(model: Path, feeds: dict[str, np.ndarray], optimize: bool = True) -> tuple[list[str], list[np.ndarray]]:
    """Output names and values. optimize=False runs Q/DQ nodes as written instead of fusing them into
    ONNX Runtime's integer QLinear* kernels: quantize-dequantize in float, as TensorRT defines Q/DQ."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return names, session.run(names, feeds)
