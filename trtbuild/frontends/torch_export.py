"""PyTorch -> ONNX: which exporter (dynamo, or TorchScript for an opset dynamo does not write or a model it
fails on), and the TorchScript trace checked by torch.export (trtbuild.frontends.torch_dims).

Imported by trtbuild.frontends.pytorch inside its functions, so torch loads only in worker processes.
"""

from __future__ import annotations

import linecache
import re
import sys
import traceback
import warnings
from pathlib import Path

import torch

from trtbuild.errors import StepError, first_line
from trtbuild.frontends import ModelSpec, torch_dims
from trtbuild.store import hashing


def export(model, spec: ModelSpec, out: Path) -> dict:
    """The exporter the recipe and model call for, and what it reports; under torch.no_grad(). The
    TorchScript tracer's warnings about sizes become the step's warnings (the log gets every warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            meta = _export(model, spec, out)
        finally:
            for w in caught:
                print(warnings.formatwarning(w.message, w.category, w.filename, w.lineno), end="", file=sys.stderr)
    sizes = size_warnings(caught)
    return meta | ({"warnings": sizes} if sizes else {})


_SIZE_WORDS = re.compile(r"shape|size|len\(|numel|dim")


def size_warnings(caught, most: int = 5) -> list[str]:
    """The tracer's warnings whose message or line of code names a size: the trace may have fixed it."""
    found = {}
    for w in caught:
        if not issubclass(w.category, torch.jit.TracerWarning):
            continue
        code = linecache.getline(w.filename, w.lineno).strip()
        if (w.filename, w.lineno) not in found and _SIZE_WORDS.search(f"{code} {w.message}"):
            found[w.filename, w.lineno] = (f"the TorchScript trace took a size as a Python value at "
                                           f"{Path(w.filename).name}:{w.lineno} (`{code[:120]}`): the ONNX model "
                                           f"keeps what it was at opt ({first_line(w.message).split('. ')[0][:160]})")
    lines = list(found.values())
    return lines[:most] + ([f"{len(lines) - most} more such tracer warnings in the log"] if len(lines) > most else [])


def _export(model, spec: ModelSpec, out: Path) -> dict:
    meta = {"torch": torch.__version__}
    if model.program is not None:
        _dynamo(model.program, spec, out, model.program_names)
        _order_outputs(out, model.names)
        return meta | {"exporter": "dynamo"}
    if spec.exporter == "torchscript" or isinstance(model.model, torch.jit.ScriptModule):
        _torchscript(model, spec, out)
        return meta | {"exporter": "torchscript"}
    if spec.exporter == "dynamo":
        try:
            _dynamo(model, spec, out, model.names)
        except Exception as exc:
            torch_dims.raise_if_refused(exc, spec)
            raise
        return meta | {"exporter": "dynamo"}
    return meta | _auto(model, spec, out)


DYNAMO_FIRST_OPSET = 18  # dynamo writes opset 18 and up, and converts down only some models


def _auto(model, spec: ModelSpec, out: Path) -> dict:
    """dynamo where it can write the recipe's opset, torchscript where it cannot (chosen before any
    export runs) or where dynamo fails or writes another opset. The step log gets dynamo's whole error."""
    if spec.opset < DYNAMO_FIRST_OPSET:
        why = f"opset {spec.opset}: dynamo writes {DYNAMO_FIRST_OPSET} and up"
        if any(-1 in s["shape"] for s in spec.inputs.values()):
            return _checked_torchscript(model, spec, out, why)
        return _with_torchscript(model, spec, out, why) | {"chosen": why}
    try:
        _dynamo(model, spec, out, model.names)
        written = _opset(out)
        if written == spec.opset:
            return {"exporter": "dynamo"}
        why = f"dynamo wrote opset {written}, not {spec.opset}"
    except Exception as exc:
        traceback.print_exc()
        # Never a fallback here: torchscript would bake the traced size in and still call the dim dynamic.
        torch_dims.raise_if_refused(exc, spec)
        why = f"dynamo failed: {torch_dims.root_cause(exc)}"
    print(f"trtbuild: {why}; exporting with torchscript", file=sys.stderr)
    for stale in out.parent.glob(f"{out.name}*"):  # dynamo's model and any external data beside it
        stale.unlink()
    return _with_torchscript(model, spec, out, why) | {"fallback": why}


def _checked_torchscript(model, spec: ModelSpec, out: Path, why: str) -> dict:
    """torchscript, while torch.export checks the dynamic dims (a dim the model fixes is refused
    before the trace's ONNX model is kept). Without a parity reference to take from the trace, it
    traces at the small sizes, and keeps that where torch.export vouches for it: no failure, guards
    that hold there, and no tracer warning (a size the tracer may have baked in)."""
    small = None if spec.reference else torch_dims.small_shapes(spec)
    pending = torch_dims.start(model, spec, small)
    threads = torch.get_num_threads()
    failure, warned = None, []
    try:
        if pending.forked:  # the check has a core: the trace's threads leave it that (measured: 0.8 s less)
            torch.set_num_threads(max(1, threads - 1))
        warned = _traced_warnings(model, spec, out, small)
        hashing.note_written(out)  # while the check runs on: the runner need not read it again
    except Exception as exc:
        failure = exc
        traceback.print_exc()
    finally:
        torch.set_num_threads(threads)
        found = pending.verdict()
    print(found.log, end="", file=sys.stderr)
    if found.refused:
        raise StepError(found.refused, user_error=True)
    if found.failed:
        why += f"; torch.export failed: {found.failed}"
    meta = {"exporter": "torchscript", "chosen": why} | ({"size_guards": found.guards} if found.guards else {})
    if small is None:
        if failure is not None:
            raise _torchscript_failed(failure, why) from None
        return meta
    doubt = ("the trace at size 2 failed" if failure else "torch.export failed" if found.failed else
             "the guards do not hold at size 2" if not found.small_ok else
             "the tracer warned (above)" if warned else None)
    if doubt is None:
        return meta | {"traced_at": small}
    print(f"trtbuild: {doubt}; tracing again at opt", file=sys.stderr)
    return _with_torchscript(model, spec, out, why) | meta


def _traced_warnings(model, spec: ModelSpec, out: Path, shapes: dict[str, list[int]] | None) -> list[str]:
    """_torchscript, returning the tracer's warnings (the log gets every warning as usual)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _torchscript(model, spec, out, shapes)
    for w in caught:  # on to export()'s record
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]


def _with_torchscript(model, spec: ModelSpec, out: Path, why: str) -> dict:
    try:
        _torchscript(model, spec, out)
    except Exception as exc:
        traceback.print_exc()
        raise _torchscript_failed(exc, why) from None
    return {"exporter": "torchscript"}


def _torchscript_failed(exc: Exception, why: str) -> StepError:
    return StepError(f"the torchscript exporter failed (full error in the log): {torch_dims.root_cause(exc)}; "
                     f"it was used because {why}")


def _dynamo(model, spec: ModelSpec, out: Path, output_names: list[str]) -> None:
    kwargs = {}
    if not isinstance(model, torch.export.ExportedProgram):  # a program has its dynamic dims already
        kwargs["dynamic_shapes"] = torch_dims.dynamic_shapes(spec)
    program = torch.onnx.export(model, torch_dims.example_args(spec), dynamo=True, opset_version=spec.opset,
                                input_names=list(spec.inputs), output_names=output_names, **kwargs)
    _without_stack_traces(program.model)
    program.save(str(out), external_data=True)  # as torch.onnx.export(f=...) saves


def _without_stack_traces(model) -> None:
    """Drop the Python stack trace the exporter writes into each node: it holds the absolute paths and line
    numbers of the model's code, so the same model exported from another checkout, or after a comment
    edit, would be other bytes, and every step after the export would rebuild."""
    import onnx_ir as ir

    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        for node in ir.traversal.RecursiveGraphIterator(graph):
            node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)


def _torchscript(model, spec: ModelSpec, out: Path, shapes: dict[str, list[int]] | None = None) -> None:
    """Trace at opt, or at `shapes` (the input's dims there), into `out`."""
    example, names = torch_dims.example_args(spec, shapes), model.names
    if isinstance(model.model, torch.jit.ScriptModule):
        # torch.onnx cannot trace a wrapper around a TorchScript module; torch.jit.trace can
        model = torch.jit.trace(model, example, check_trace=False)
    axes = {n: {i: f"{n}_{i}" for i, d in enumerate(s["shape"]) if d == -1} for n, s in spec.inputs.items()}
    seen = {}  # the trace runs the model for real: its outputs are the reference `predict` would compute again
    hook = None if isinstance(model, torch.jit.ScriptModule) else model.register_forward_hook(
        lambda module, args, result: seen.update(inputs=args, outputs=result))
    try:
        torch.onnx.export(model, example, str(out), dynamo=False, opset_version=spec.opset,
                          input_names=list(spec.inputs), output_names=names,
                          dynamic_axes={n: a for n, a in axes.items() if a} or None)
    finally:
        if hook is not None:
            hook.remove()
    if seen:
        model.traced = ([a.detach().cpu().numpy() for a in seen["inputs"]],
                        [t.detach().cpu().numpy() for t in seen["outputs"]])


def _order_outputs(out: Path, names: list[str]) -> None:
    """Put the ONNX graph's outputs in `names` order, leaving out the others (an ExportedProgram keeps the
    order it returns, and all it returns)."""
    import onnx

    model = onnx.load(str(out), load_external_data=False)
    if [o.name for o in model.graph.output] == names:
        return
    by_name = {o.name: onnx.ValueInfoProto() for o in model.graph.output}
    for o in model.graph.output:
        by_name[o.name].CopyFrom(o)
    del model.graph.output[:]
    model.graph.output.extend(by_name[n] for n in names)
    onnx.save(model, str(out))


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
