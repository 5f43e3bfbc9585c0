"""simplify: onnx-simplifier (constant folding, shape simplification), verified with ONNX Runtime.

A model the simplifier cannot handle passes through unchanged with a warning: the engine builder,
not this optimization, decides whether a model builds. A simplified model whose outputs differ from
the original's fails the step: the rewrite is wrong, and nothing built from it may be cached.

A model whose weights exceed TRTBUILD_SIMPLIFY_MAX_WEIGHTS is not simplified (onnx-simplifier would
hold them in memory several times): a user's ONNX model skips this step when the recipe is planned
(trtbuild.planning.graph), an exported one passes through here as the same files, never loaded."""

from __future__ import annotations

from pathlib import Path

from trtbuild.errors import StepError, UsageError, first_line
from trtbuild.models.onnx_io import save_onnx
from trtbuild.steps import AT_OPT, Job, Reads

NAME = "simplify"
MAIN_OUTPUT = "model.onnx"
EXTERNAL_DATA = True  # files besides MAIN_OUTPUT: the model's external data
READS = Reads(params=("inputs", "check"),  # env: e.g. ONNXSIM_FIXED_POINT_ITERS, and the bound below
              files=("model",), context=(), env=("ONNXSIM_", "TRTBUILD_SIMPLIFY_MAX_WEIGHTS"))
# onnx-simplifier holds a model's weights in memory several times over (about 5x, bench/README.md): a
# model whose weights exceed this bound goes to the builder as given, its files linked or copied, never
# loaded. TRTBUILD_SIMPLIFY_MAX_WEIGHTS ("512MiB", "4GiB" or bytes) moves it; its value is in the key.
MAX_WEIGHTS_ENV = "TRTBUILD_SIMPLIFY_MAX_WEIGHTS"
DEFAULT_MAX_WEIGHTS = 1 << 30
# A spare worker loads these before this step comes (onnx-simplifier alone takes 0.6 s to import).
IMPORTS = ("numpy", "onnx", "onnxruntime", "trtbuild.models.onnxsim_loader")


def tools(params: dict) -> tuple[str, ...]:
    return ("onnx", "onnxsim", "onnxruntime", "numpy")


def run(job: Job) -> dict:
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    from trtbuild.models.onnx_io import copy_model_files
    from trtbuild.models.onnxsim_loader import onnxsim

    source = job.inputs["model"]
    output = job.outdir / "model.onnx"
    before = onnx.load(str(source), load_external_data=False)
    skipped = _too_large(before)
    if skipped:  # the files as given, linked or copied: the weights are never loaded
        copy_model_files(source, before, output, link=source.parent.parent == job.outdir.parent)
        nodes = len(before.graph.node)
        return {"nodes_before": nodes, "nodes_after": nodes, "simplified": False, "skipped": skipped,
                "warnings": [skipped]}
    load_external_data_for_model(before, str(source.parent))  # once: onnx-simplifier takes the loaded model too
    thorough = job.params["check"] == "thorough"
    # thorough: onnx-simplifier's own check, 3 random inputs at the opt shapes; quick: ours, below.
    test_shapes = {name: spec["opt"] for name, spec in job.params["inputs"].items()}
    note, warnings = "onnx-simplifier's check: 3 random inputs at the opt shapes", []
    try:
        try:
            simplified, same = onnxsim.simplify(before, check_n=3 if thorough else 0, test_input_shapes=test_shapes)
        except Exception as exc:
            if not (thorough and type(exc).__module__.startswith("onnxruntime")):
                raise
            from trtbuild.models.tensors import onnxruntime_problem

            ort_error = _ort_error(source, job.params["inputs"])
            if ort_error is None:  # the original runs: the simplified model is what ONNX Runtime refuses
                raise ValueError(f"ONNX Runtime cannot run the simplified model ({onnxruntime_problem(exc)[:300]})") from exc
            note = f"not compared: ONNX Runtime cannot run the model ({ort_error[:300]})"
            simplified, same = onnxsim.simplify(before, check_n=0, test_input_shapes=test_shapes)
        if not same:
            raise Mismatch("the simplified model's outputs differ from the original's on ONNX Runtime")
        grown = _grown(before, simplified)
        if grown:
            return _as_given(before, output, grown)
        save_onnx(simplified, output)
        if not thorough:
            note = quick_check(source, output, job.params["inputs"], loaded=before)
        if note.startswith("not compared"):
            warnings.append(f"the simplified model was not checked: {note[len('not compared: '):]}")
    except Mismatch as exc:
        raise StepError(f"{exc}: onnx-simplifier changed what the model computes. Build from the model as "
                        "given with `onnx: {simplify: false}` in the recipe") from exc
    except Exception as exc:
        # Simplifying is an optimization: a model onnx-simplifier cannot handle goes to the builder as given.
        import traceback  # here: a no-op build imports no traceback

        traceback.print_exc()
        for stale in job.outdir.iterdir():
            stale.unlink()
        return _as_given(before, output, f"onnx-simplifier could not simplify the model ({type(exc).__name__}: "
                                         f"{first_line(exc)[:300]}); the engine is built from the model as given")
    return {"nodes_before": len(before.graph.node), "nodes_after": len(simplified.graph.node), "simplified": True,
            "verification": note, "warnings": warnings}


def max_weights() -> int:
    """The bound on a model's weights above which it is not simplified (TRTBUILD_SIMPLIFY_MAX_WEIGHTS);
    ValueError, saying what is wrong, for a value that is not a size."""
    import os

    text = os.environ.get(MAX_WEIGHTS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_WEIGHTS
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise ValueError(f"{MAX_WEIGHTS_ENV}={text!r}: expected a size such as 512MiB, 4GiB or a number of "
                         "bytes") from None


def too_large(size: int, what: str = "the model's weights") -> str | None:
    """Why a model of `size` bytes (its weights, or its files) is not simplified; None when it is not too large."""
    bound = max_weights()
    if size <= bound:
        return None
    return (f"simplify skipped: {what} ({size / 2**20:.1f} MiB) exceed {MAX_WEIGHTS_ENV} ({bound / 2**20:.1f} MiB), "
            "over which onnx-simplifier, which holds them in memory several times, is not run; the engine is built "
            "from the model as given (raise the bound to simplify it)")


def files_too_large(files) -> str | None:
    """Why a user's ONNX model is not simplified (its files exceed the bound): it skips this step when the
    recipe is planned, so nothing copies it into the cache and the engine reads it where it is. ValueError
    for a bound that is not a size."""
    import os

    try:
        size = sum(os.stat(f).st_size for f in set(files))
    except OSError:  # gone meanwhile: the steps that read it say so
        return None
    return too_large(size, "the model's files")


def _too_large(model) -> str | None:
    """Why `model` (loaded without its external data) is not simplified: its weights exceed the bound."""
    from trtbuild.models.onnx_io import weight_bytes

    try:
        return too_large(weight_bytes(model))
    except ValueError as exc:
        raise StepError(str(exc), user_error=True) from None


def _grown(before, simplified) -> str | None:
    """Why the simplified model is worse to build from: constants folded into weights (ConstantOfShape
    expanded to a full tensor) make a larger model, and a larger plan, than the one given."""
    from trtbuild.models.onnx_io import weight_bytes

    old, new = weight_bytes(before), weight_bytes(simplified)
    if new > 2 * old and new - old > _GROWTH_ALLOWED:
        return (f"onnx-simplifier folded constants into weights ({old / 2**20:.1f} MiB -> {new / 2**20:.1f} MiB); "
                "the engine is built from the smaller model as given")
    return None


_GROWTH_ALLOWED = 1 << 20  # bytes of weights simplification may add (a few folded shape constants)


def _as_given(before, output: Path, why: str) -> dict:
    save_onnx(before, output)
    nodes = len(before.graph.node)
    return {"nodes_before": nodes, "nodes_after": nodes, "simplified": False, "warnings": [why]}


class Mismatch(ValueError):
    """The simplified model computes something else than the original."""


def quick_check(original: Path, simplified: Path, recipe_inputs: dict, loaded=None) -> str:
    """One run of each model on ONNX Runtime, on the same seeded inputs at the opt shapes with a dynamic
    batch of 1: what proves a rewrite for a fraction of onnx-simplifier's check (two runs at opt).
    `loaded`: the original as a ModelProto, when the caller has it (its inputs are read from it).
    Returns the verification note; raises Mismatch when the simplified model disagrees, ValueError when
    ONNX Runtime refuses it."""
    import numpy as np

    from trtbuild.models.onnx_io import complete_inputs
    from trtbuild.models.tensors import at_batch_one, example_inputs, onnxruntime_problem, run_onnxruntime

    at_opt = complete_inputs(original if loaded is None else loaded, recipe_inputs)
    try:
        feeds = example_inputs(at_batch_one(at_opt), seed=0)
        try:  # unoptimized sessions: they start 4x faster, and compare the two graphs as written
            names, expected = run_onnxruntime(original, feeds, optimize=False)
        except Exception:  # a model whose batch 1 is outside its profile: at opt, then
            feeds = example_inputs(at_opt, seed=0)
            names, expected = run_onnxruntime(original, feeds, optimize=False)
    except StepError as exc:  # string inputs, say: nothing to feed either model
        return f"not compared: {exc}"
    except Exception as exc:  # a plugin op, say: nothing to compare with
        return f"not compared: ONNX Runtime cannot run the model ({onnxruntime_problem(exc)[:300]})"
    try:
        got_names, actual = run_onnxruntime(simplified, feeds, optimize=False)
    except Exception as exc:
        raise ValueError(f"ONNX Runtime cannot run the simplified model ({onnxruntime_problem(exc)[:300]})") from exc
    got = dict(zip(got_names, actual))
    worst, worst_l2 = 0.0, 0.0
    for name, want in zip(names, expected):
        have = got.get(name)
        if have is None or have.shape != want.shape:
            raise Mismatch(f"the simplified model's output {name!r} differs from the original's on ONNX Runtime "
                           f"(shape {None if have is None else list(have.shape)}, the original's {list(want.shape)})")
        rel_l2 = _rel_l2(have, want)
        # Folding a Mul into Conv weights reassociates float math: a few elements move past atol while
        # the output as a whole stays within float32 noise. A wrong rewrite moves it by far more.
        if not (np.allclose(have, want, rtol=1e-4, atol=1e-5, equal_nan=True) or rel_l2 <= REL_L2_NOISE):
            raise Mismatch(f"the simplified model's output {name!r} differs from the original's on ONNX Runtime "
                           f"(relative L2 error {rel_l2:.1e} > {REL_L2_NOISE:g}, max abs diff "
                           f"{float(np.max(np.abs(have.astype(np.float64) - want))):.1e})")
        if want.size and want.dtype.kind == "f":
            worst = max(worst, float(np.max(np.abs(have.astype(np.float64) - want))))
            worst_l2 = max(worst_l2, rel_l2)
    shapes = ", ".join(f"{n} {list(a.shape)}" for n, a in feeds.items())
    return (f"outputs compared with the original on ONNX Runtime once ({shapes}; max abs diff {worst:.1e}, "
            f"relative L2 error {worst_l2:.1e})")


REL_L2_NOISE = 1e-5  # ||simplified - original|| / ||original|| that float reassociation stays within


def _rel_l2(have, want) -> float:
    """||have - want|| / ||want||; NaN where either has NaNs (np.allclose judges those)."""
    import numpy as np

    if want.dtype.kind not in "fc":
        return 0.0 if np.array_equal(have, want) else float("inf")
    want64 = want.astype(np.float64)
    return float(np.linalg.norm(have.astype(np.float64) - want64) / max(np.linalg.norm(want64), np.finfo(np.float32).tiny))


def _ort_error(model_path, recipe_inputs: dict) -> str | None:
    """Why ONNX Runtime cannot run the model once on example inputs at opt; None when it can."""
    from trtbuild.models.onnx_io import complete_inputs
    from trtbuild.models.tensors import example_inputs, onnxruntime_problem, run_onnxruntime

    try:
        run_onnxruntime(model_path, example_inputs(complete_inputs(model_path, recipe_inputs), seed=0))
    except Exception as exc:
        return onnxruntime_problem(exc)
    return None


AFTER = ("check",)


def plan(p):
    """With onnx.simplify on: onnx-simplifier on the model, whose result the next steps read (unless the
    recipe's ONNX model is too large to simplify here: then the step is skipped and they read the model)."""
    if not p.recipe.onnx.simplify:
        return None
    model = p.model
    # Gated on check only: with -j it runs beside parity; the engine waits for both.
    step = p.step(NAME, {"inputs": p.read(*AT_OPT), "check": p.recipe.onnx.simplify_check}, {"model": model},
                  after=[p.first("check")])
    if isinstance(model, p.SourceFiles):  # an exported model's weights are judged by its simplify step
        try:
            step.skip_reason = files_too_large(model.files)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if step.skip_reason is None:
        p.model = step
    return step
