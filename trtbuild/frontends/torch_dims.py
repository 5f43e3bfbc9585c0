"""torch.export's check of the recipe's dynamic dims, for the TorchScript exporter (opset below 18), and
the example inputs every PyTorch export runs the model on.

The TorchScript tracer bakes in any size the model's code fixes or branches on and still calls the
dim dynamic; torch.export traces with symbolic sizes and says so: a dim the model fixes is a recipe
error, and the guards it records (the branches the code took on sizes) tell whether a trace at a
small size takes the same path as one at `opt` (the same ONNX graph, for less work).

On Linux the check runs in a forked copy of the process while the trace runs here, each on its own
core; the verdict decides whether the trace stands. Imported inside the PyTorch front-end's
functions, so torch loads only in worker processes.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple

import torch

from trtbuild.errors import StepError, first_line, plain
from trtbuild.frontends import ModelSpec
from trtbuild.models.tensors import example_inputs


@dataclass
class Verdict:
    refused: str = ""  # the recipe error: a dim the recipe makes dynamic that the model fixes
    failed: str = ""  # why torch.export failed otherwise (the trace then stands unchecked)
    log: str = ""  # the failure's traceback, for the step's log
    small_ok: bool = False  # every guard torch.export recorded holds at the small sizes too
    guards: list[str] = field(default_factory=list)  # its conditions on input sizes ("x.size()[0] > 4")


class Pending(NamedTuple):
    verdict: Callable[[], Verdict]  # waits for it
    forked: bool  # the check runs in a copy of this process, on a core of its own


def start(model, spec: ModelSpec, small: dict[str, list[int]] | None) -> Pending:
    """Begin the check of `model` (a torch_outputs.Flat); `small` is the shapes of a cheaper trace whose
    path the guards are asked about (None: none)."""
    if not _can_fork():
        return _here(model, spec, small)
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:  # no memory for a copy (strict overcommit): check here
        os.close(read)
        os.close(write)
        return _here(model, spec, small)
    if pid == 0:  # the copy: check, answer, and leave without running anything of the parent's
        try:
            _end_with(parent)
            os.close(read)
            torch.set_num_threads(1)  # the other core is the trace's
            with os.fdopen(write, "w") as answer:
                answer.write(json.dumps(asdict(check(model, spec, small))))
        finally:
            os._exit(0)
    os.close(write)

    def wait() -> Verdict:
        with os.fdopen(read) as answer:
            text = answer.read()
        os.waitpid(pid, 0)
        return Verdict(**json.loads(text)) if text else check(model, spec, small)  # the copy died: here

    return Pending(wait, forked=True)


def _end_with(parent: int) -> None:
    """The copy is killed when the worker ends (killed at a step timeout or a stop), not left to finish."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it ended before that was set
        os._exit(0)


def _can_fork() -> bool:
    # Worth it with a second core; safe with torch on Linux as long as CUDA is not in use (a child cannot use it).
    return sys.platform == "linux" and len(os.sched_getaffinity(0)) > 1 and not torch.cuda.is_initialized()


def _here(model, spec: ModelSpec, small: dict[str, list[int]] | None) -> Pending:
    verdict = check(model, spec, small)
    return Pending(lambda: verdict, forked=False)


def check(model, spec: ModelSpec, small: dict[str, list[int]] | None) -> Verdict:
    try:
        program = torch_export(model, spec)
    except Exception as exc:
        return Verdict(refused=refusal(exc, spec), failed=root_cause(exc), log=traceback.format_exc())
    return Verdict(small_ok=small is not None and _guards_hold(program, list(small.values())),
                   guards=_size_guards(program, list(spec.inputs)))


def torch_export(model, spec: ModelSpec):
    """torch.export as dynamo's exporter runs it first (not strict): where a model's dims are checked."""
    return torch.export.export(model, example_args(spec), dynamic_shapes=dynamic_shapes(spec), strict=False)


def dynamic_shapes(spec: ModelSpec) -> tuple:
    """Flat takes *inputs: one tuple of per-input dims. Dynamic without a range: the range is the
    engine's optimization profile, so a new max exports the same ONNX model."""
    return (tuple({i: torch.export.Dim.DYNAMIC for i, d in enumerate(s["shape"]) if d == -1}
                  for s in spec.inputs.values()),)


def example_args(spec: ModelSpec, shapes: dict[str, list[int]] | None = None) -> tuple:
    """The example inputs as tensors, at opt or at `shapes` (the exports' and torch.export's)."""
    inputs = {n: s | {"opt": shapes[n]} for n, s in spec.inputs.items()} if shapes else spec.inputs
    return tuple(torch.from_numpy(a) for a in example_inputs(inputs, seed=0, values_from=spec.data).values())


def small_shapes(spec: ModelSpec) -> dict[str, list[int]] | None:
    """Each input at opt with its dynamic dims at 2 (not 1: a size-1 dim broadcasts and traces apart);
    None when that is opt already."""
    shapes = {name: [min(2, o) if d == -1 else o for d, o in zip(s["shape"], s["opt"])]
              for name, s in spec.inputs.items()}
    return None if all(shapes[n] == s["opt"] for n, s in spec.inputs.items()) else shapes


def _guards_hold(program, shapes: list[list[int]]) -> bool:
    """Whether each guard of the program (Python conditions on `L['inputs'][i].size()[d]`, the branches
    the model took on sizes) is true at `shapes`: then a trace there takes the path taken at opt.
    Any guard it cannot evaluate counts as false."""
    guards = getattr(program, "_guards_code", None)
    if guards is None:
        return False
    scope = {"L": {"inputs": [torch.empty(shape, device="meta") for shape in shapes]}}
    try:
        return all(eval(code, {"__builtins__": {}}, scope) is True for code in guards)  # torch's own expressions
    except Exception:
        return False


def _size_guards(program, names: list[str]) -> list[str]:
    """The program's guards on input sizes, with the recipe's input names: what the ONNX model assumes."""
    def named(code: str) -> str:
        return re.sub(r"L\['inputs'\]\[(\d+)\]", lambda m: names[int(m.group(1))] if int(m.group(1)) < len(names)
                      else m.group(0), code)

    return [named(code) for code in getattr(program, "_guards_code", None) or () if ".size()" in code]


# torch.export's words for a dim the recipe makes dynamic and the model fixes
_FIXED_DIM = re.compile(r"tracing inferred a static shape of (\d+) for dimension inputs\[(\d+)\]\.shape\[(\d+)\]")
# torch.export's own words (torch.onnx rewords them as above)
_SPECIALIZED = re.compile(r"You marked L\['inputs'\]\[(\d+)\]\.size\(\)\[(\d+)\] as dynamic but your code "
                          r"specialized it to be a constant \((\d+)\)")


def raise_if_refused(exc: BaseException, spec: ModelSpec) -> None:
    """A recipe error when torch.export found that the model fixes a dim the recipe makes dynamic."""
    message = refusal(exc, spec)
    if message:
        raise StepError(message, user_error=True) from None


def refusal(exc: BaseException, spec: ModelSpec) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    names = list(spec.inputs)  # Flat(*inputs) takes them in this order
    problems = []
    found = _FIXED_DIM.findall(str(exc)) + [(size, index, dim) for index, dim, size in _SPECIALIZED.findall(str(exc))]
    for size, index, dim in dict.fromkeys(found):
        if int(index) >= len(names):
            continue
        name = names[int(index)]
        head = (f"{spec.at(f'inputs.{name}')}: inputs.{name}: the model fixes dim {dim} at {size} "
                "(torch.export traced it as a constant), but the recipe makes it dynamic: ")
        if size == "1" and spec.inputs[name]["opt"][int(dim)] == 1:  # torch's size-1 specialisation of the example
            problems.append(head + f"1 is its size at opt, and torch fixes a dynamic dim whose example size is 1: "
                            f"make opt of dim {dim} 2 or more (the export traces at opt)")
            continue
        problems.append(head + f"make it {size} in min, opt and max, or change the model so that it takes any "
                        "size there")
    return "\n".join(problems)


def root_cause(exc: BaseException) -> str:
    """The innermost cause's type and first line: torch.onnx wraps torch.export's error in a page of advice."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return plain(f"{type(exc).__name__}: {first_line(exc)}")
