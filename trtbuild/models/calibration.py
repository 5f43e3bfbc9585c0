"""Calibration batches for int8 / fp8: from .npy / .npz files (every file a glob matches, in name
order, unless `batches` limits them) or from the user's loader (all it yields, unless `batches` limits
it), each array checked against the model's input and cast to its type. A .npz whose arrays share their
first dim holds samples, cut into batches of opt's batch size; one whose arrays differ there (a KV cache
laid out [layers, batch, ...] beside [batch, length] tokens) is one batch as it is. Data that does not fit
is a recipe error naming the file, the expected and the actual shape or type."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from trtbuild.errors import StepError


def calibration_batches(job, model) -> tuple[list[dict], str | None]:
    """{input name: array} batches: all the data gives, or the first `batches`; and what was left unused
    past `batches` (for a warning), or None. The files a loader reads are recorded by the worker, as
    for any step that runs the user's code (trtbuild.store.discovered)."""
    from trtbuild.models.onnx_io import complete_inputs

    spec = job.params["calibration"]
    inputs = complete_inputs(model, job.params["inputs"])
    where = job.context.get("where", "precision.calibration")
    leftover = None
    if spec["loader"]:
        sys.path[:0] = job.context["python_path"]
        batches, more = _from_loader(spec["loader"], inputs, spec["batches"], where)
        leftover = f"further batches of {spec['loader']}" if more else None
    else:
        files = [Path(f) for f in job.context["calibration_files"]]  # planning passes only those to read
        batches, cut = _from_files(files, inputs, spec["batches"], where)
        unread = job.context.get("calibration_unread", 0)
        parts = [f"{cut} batch(es) of the last file read"] * bool(cut) + [f"{unread} file(s) the glob matches"] * bool(unread)
        leftover = " and ".join(parts) or None
    if not batches:
        raise StepError(f"{where}: precision.calibration produced no batches", user_error=True)
    return batches, leftover


def _from_loader(name: str, inputs: dict, limit: int | None, where: str) -> tuple[list[dict], bool]:
    """The loader's batches, up to `limit`; and whether it had more."""
    import numpy as np

    module, _, attr = name.partition(":")
    loader = importlib.import_module(module)
    for part in attr.split("."):
        loader = getattr(loader, part)
    batches = []
    for i, batch in enumerate(loader()):
        if len(batches) == limit:
            return batches, True
        origin = f"batch {i} of {name}"
        missing = [n for n in inputs if n not in batch]
        if missing:
            raise StepError(f"{where}: {origin} has no array for inputs {missing} (it has {sorted(batch)})",
                            user_error=True)
        batches.append({n: fit(_numpy(batch[n], np), n, inputs[n], origin, where) for n in inputs})
    return batches, False


def _numpy(value, np):
    """An array from numpy, or a tensor from torch (what a DataLoader yields)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _from_files(files: list[Path], inputs: dict, limit: int | None, where: str) -> tuple[list[dict], int]:
    """Batches from every file, in name order, up to `limit`; and how many batches past it were cut."""
    import numpy as np

    if any(f.suffix not in (".npy", ".npz") for f in files):  # planning refuses these; a file renamed since
        raise StepError(f"{where}: calibration data other than .npy / .npz files needs a loader: "
                        "precision.calibration.loader: 'module:callable'", user_error=True)
    if files[0].suffix == ".npz":
        batch_size = next(iter(inputs.values()))["opt"][0]
        batches = []
        for file in files:  # every shard, in name order
            with np.load(file) as npz:
                missing = [n for n in inputs if n not in npz.files]
                if missing:
                    raise StepError(f"{where}: calibration data {file} has no arrays for inputs {missing} "
                                    f"(it has {npz.files})", user_error=True)
                arrays = {n: npz[n] for n in inputs}
            if len({len(a) for a in arrays.values()}) > 1:  # no common samples dim: the file is one batch
                batches.append({n: fit(a, n, inputs[n], str(file), where) for n, a in arrays.items()})
                continue
            arrays = {n: fit(a, n, inputs[n], str(file), where, batched=True) for n, a in arrays.items()}
            count = len(next(iter(arrays.values())))
            batches += [{n: a[i:i + batch_size] for n, a in arrays.items()} for i in range(0, count, batch_size)]
        return batches[:limit], max(0, len(batches) - (limit or len(batches)))
    if len(inputs) != 1:
        raise StepError(f"{where}: calibration .npy files feed single-input models; this model has inputs "
                        f"{list(inputs)}: use .npz files keyed by input name", user_error=True)
    name, spec = next(iter(inputs.items()))
    return [{name: fit(np.load(f), name, spec, str(f), where)} for f in files[:limit]], max(0, len(files) - (limit or len(files)))


def fit(array, name: str, spec: dict, origin: str, where: str, batched: bool = False):
    """`array` as the model's input `name` takes it: a sample without its batch dim gains one, numbers are
    cast to the input's type (float64 -> float32); a shape outside the recipe's range, or floats for an
    integer input (or the reverse), is an error naming the file."""
    import numpy as np

    from trtbuild.models.tensors import numpy_dtype

    shape = spec["shape"]
    if not batched and array.ndim == len(shape) - 1:
        array = array[None]  # one sample per file: a batch of 1
    dims = list(array.shape)
    if not _fits(dims, shape, batched):
        nchw = [dims[0], dims[3], dims[1], dims[2]] if len(dims) == 4 else None
        hint = (" (the data looks NHWC and the model takes NCHW: save array.transpose(0, 3, 1, 2))"
                if nchw and _fits(nchw, shape, batched) else "")
        raise StepError(f"{where}: calibration data {origin}: input {name!r} has shape {dims}, the model takes "
                        f"{shape} (-1: any size){hint}", user_error=True)
    target = numpy_dtype(spec["dtype"])
    if (np.dtype(array.dtype).kind == "f") != (target.kind in "fV"):  # bfloat16 is kind V
        raise StepError(f"{where}: calibration data {origin}: input {name!r} is {array.dtype}, the model takes "
                        f"{spec['dtype']}", user_error=True)
    return array.astype(target)


def _fits(dims: list[int], shape: list[int], batched: bool) -> bool:
    """Matches the input's shape; data split into batches afterwards may have any number of samples."""
    return len(dims) == len(shape) and all(d == s or s == -1 or (batched and i == 0)
                                           for i, (d, s) in enumerate(zip(dims, shape)))
