"""A PyTorch model's outputs as a flat tuple with names taken from what the model returns.

torch names the outputs of an exported model by graph value ("366", "599") and leaves the flattening
of dicts, nested tuples and None to each exporter. `Flat` runs the model and returns its tensors in
one known order, so the exporter, the names and the parity reference always agree. Imported by
trtbuild.frontends.pytorch inside its functions, so torch loads only in worker processes.
"""

from __future__ import annotations

import re
import traceback

import torch

from trtbuild.errors import StepError, first_line
from trtbuild.frontends import ModelSpec

KeyPath = tuple  # keys and indices from the model's result down to one tensor


class Flat(torch.nn.Module):
    """`model` with its result flattened to the tensors at `paths`, exported under `names`.

    `program` is the ExportedProgram `model` comes from (exported as it is, its outputs in
    `program_names` order), or None.
    """

    def __init__(self, model, paths: list[KeyPath], names: list[str], program=None, program_names=None,
                 keywords: list[str] | None = None):
        super().__init__()
        self.model = model
        self.paths = paths
        self.names = names
        self.program = program
        self.program_names = program_names
        self.keywords = keywords  # forward() parameter names the inputs bind to; None: by position

    def forward(self, *inputs):
        result = call(self.model, inputs, self.keywords)
        return tuple(_pick(result, path) for path in self.paths)


def call(model, inputs: tuple, keywords: list[str] | None):
    return model(**dict(zip(keywords, inputs))) if keywords else model(*inputs)


def flatten(model, spec: ModelSpec, example: tuple, program=None, keywords: list[str] | None = None) -> Flat:
    """Run `model` once on `example` to learn what it returns, and wrap it in a `Flat`."""
    try:
        with torch.no_grad():
            result = call(model, example, keywords)
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        problem = _dtype_problem(exc, spec, model)
        if problem is None:
            raise
        traceback.print_exc()
        raise StepError(problem, user_error=True) from None
    paths = _leaves(result)
    _check_tensors(result, paths, spec)
    names = [_name(result, p) for p in paths]
    order, final = _apply_recipe_names(result, names, spec)
    # an ExportedProgram is exported with all its outputs, then those not picked are dropped
    program_names = [final[order.index(i)] if i in order else names[i] for i in range(len(paths))]
    flat = Flat(model, [paths[i] for i in order], final, program, program_names, keywords)
    # this run's outputs, for predict() on the same inputs (the parity reference at opt, often these)
    flat.traced = ([a.detach().cpu().numpy() for a in example], [_pick(result, p).detach().cpu().numpy() for p in flat.paths])
    return flat


def _leaves(value, path: KeyPath = ()) -> list[KeyPath]:
    if isinstance(value, dict):  # Hugging Face ModelOutput too: an OrderedDict without its None fields
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return [path]
    return [p for key, v in items if v is not None for p in _leaves(v, (*path, key))]


def _pick(value, path: KeyPath):
    for key in path:
        value = value[key]
    return value


def _name(result, path: KeyPath) -> str:
    """"output" for one tensor, "output_1_0" in tuples, "key" / "key_0" in a dict."""
    parts = [str(k) for k in path] if isinstance(result, dict) else ["output", *map(str, path)]
    return "_".join(parts)


def _check_tensors(result, paths: list[KeyPath], spec: ModelSpec) -> None:
    for path in paths:
        value = _pick(result, path)
        if not isinstance(value, torch.Tensor):
            raise StepError(f"{spec.at('source')}: source: the model's output {_name(result, path)!r} is of type "
                            f"{type(value).__name__}, not a tensor, which ONNX outputs must be (for a Hugging Face "
                            "model, turn off what returns it, e.g. use_cache=False)", user_error=True)


def _apply_recipe_names(result, names: list[str], spec: ModelSpec) -> tuple[list[int], list[str]]:
    """The export order (indices into `names`) and the final names, from source.outputs if given: outputs
    are picked and ordered by name (a dict's keys, or the default names of a tuple's, "output_1_0"); as
    many names as a tuple has tensors, not all of them its own, rename its outputs by position."""
    wanted = list(spec.outputs)
    if not wanted:
        return list(range(len(names))), names
    at = f"{spec.at('source.outputs')}: source.outputs"
    twice = [n for n in dict.fromkeys(wanted) if wanted.count(n) > 1]
    if twice:
        raise StepError(f"{at}: {twice[0]!r} is named twice; name each output once", user_error=True)
    if all(n in names for n in wanted):
        return [names.index(n) for n in wanted], wanted
    if isinstance(result, dict):
        unknown = [n for n in wanted if n not in names]
        verb = "is not an output" if len(unknown) == 1 else "are not outputs"
        raise StepError(f"{at}: {', '.join(map(repr, unknown))} {verb} of the model; it returns a dict with "
                        f"{names}: name some of those, in the order wanted", user_error=True)
    if len(wanted) != len(names):
        kind = "one tensor" if names == ["output"] else f"a {type(result).__name__} of {len(names)} tensors"
        raise StepError(f"{at}: {len(wanted)} names for {len(names)} outputs: the model returns {kind} "
                        f"({', '.join(names)}): name them all (new names, by position), or pick some by those names",
                        user_error=True)
    return list(range(len(names))), wanted


# torch's words for dtypes in its errors -> the recipe's
_DTYPE_WORDS = {
    "float": "float32", "double": "float64", "half": "float16", "bfloat16": "bfloat16",
    "long": "int64", "long int": "int64", "int": "int32", "short": "int16", "bool": "bool",
}
# Errors of layers given a tensor of the wrong dtype; the group is the dtype they expect, where said.
_DTYPE_ERRORS = (
    r"expected scalar type (\w+)",  # expected scalar type Float but found Long
    r"and (?:bias|weight) type \((?:c10::)?([\w ]+)\) should be the same",  # Input type (long int) and bias ...
    r"must have the same dtype, but got \w+ and (\w+)",  # mat1 and mat2 (Linear)
    r"to have one of the following scalar types: (\w+)",  # Embedding's indices
    r"not implemented for '\w+'()",  # "batch_norm" not implemented for 'Long'
    r"all inputs must share same datatype()",  # LayerNorm
)


def _dtype_problem(exc: BaseException, spec: ModelSpec, model) -> str | None:
    """A message blaming the inputs' dtypes, if `exc` is a layer rejecting an input's dtype."""
    text = str(exc)
    found = next((m for m in (re.search(p, text) for p in _DTYPE_ERRORS) if m), None)
    if found is None:
        return None
    expected = _DTYPE_WORDS.get(found.group(1).lower()) if found.group(1) else _parameter_dtype(model)
    given = {name: s["dtype"] for name, s in spec.inputs.items()}
    blamed = [n for n, d in given.items() if d != expected] or list(given)
    fix = f": the model expects {expected}" if expected else ""
    return "\n".join(f"{spec.at(f'inputs.{n}.dtype')}: inputs.{n}.dtype: the model rejects {given[n]} input "
                     f"({type(exc).__name__}: {first_line(exc)}){fix}" for n in blamed)


def _parameter_dtype(model) -> str | None:
    """The dtype of the model's first floating-point weight, as the recipe names it."""
    params = model.parameters() if isinstance(model, torch.nn.Module) else ()
    for p in params:
        if p.is_floating_point():
            return str(p.dtype).removeprefix("torch.")
    return None
