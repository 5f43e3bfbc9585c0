"""Which calibration files a precision step reads: all that a glob matches, unless `batches` limits it.

Planning keys only these files (a file past the limit is never opened, so it cannot change the model)
and tells the step how many it leaves unread, for a warning. Counting the batches of a .npz shard reads
its arrays' headers only (the standard library, no numpy: planning runs on every no-op build)."""

from __future__ import annotations

import ast
import math
import struct
import zipfile
from pathlib import Path

SUFFIXES = (".npy", ".npz")


def files_to_read(found: list[Path], limit: int | None, batch_size: int) -> list[Path]:
    """The prefix of `found` (in name order) that yields `limit` batches: one per .npy file, and for
    a .npz, its samples in batches of `batch_size`. Raises ValueError for a file that is neither."""
    other = [p for p in found if p.suffix not in SUFFIXES]
    if other:
        raise ValueError(f"{other[0].name} is not a .npy or .npz file ({len(other)} such of {len(found)} matched): "
                         "calibration data other than arrays (images, say) needs a loader: "
                         "precision.calibration.loader: 'module:callable' yielding {input name: array} batches")
    if limit is None:
        return found
    read, batches = [], 0
    for path in found:
        if batches >= limit:
            break
        read.append(path)
        batches += math.ceil(_samples(path) / max(batch_size, 1)) if path.suffix == ".npz" else 1
    return read


def _samples(path: Path) -> int:
    """The first dim of the first array in a .npz (its samples), from the .npy header; 1 if unreadable
    (the step then reads the file and reports what is wrong with it)."""
    shapes = _npz_shapes(path)
    shape = next(iter(shapes.values()), None) if shapes else None
    return int(shape[0]) if shape else 1


def _npz_shapes(path: Path) -> dict[str, list[int]] | None:
    """Each array's shape in a .npz, from the .npy headers; None if unreadable."""
    try:
        shapes = {}
        with zipfile.ZipFile(path) as archive:
            for member in (n for n in archive.namelist() if n.endswith(".npy")):
                with archive.open(member) as f:
                    shapes[member[:-4]] = _header_shape(f)
        return shapes
    except Exception:  # OSError, BadZipFile, a header that is not a dict...: the step reads it and says what
        return None


def _header_shape(f) -> list[int]:
    magic = f.read(8)
    size_format = "<H" if magic[6] == 1 else "<I"
    (length,) = struct.unpack(size_format, f.read(struct.calcsize(size_format)))
    if length > 65536:  # numpy writes a few hundred bytes; a file claiming more is not read here
        raise ValueError("a .npy header too long")
    return [int(d) for d in ast.literal_eval(f.read(length).decode("latin1"))["shape"]]


def sizes_in(files: list[Path], lone_input: str | None) -> dict[str, list[list[int]]]:
    """Each array's [smallest, largest] size per dim over the files (headers only): a .npz's arrays by
    name, a .npy's as `lone_input` (the model's one input; None: not counted). Unreadable files are
    left to the precision step."""
    found: dict[str, list[list[int]]] = {}
    for path in files:
        if path.suffix == ".npz":
            shapes = _npz_shapes(path) or {}
        else:
            try:
                with open(path, "rb") as f:
                    shapes = {lone_input: _header_shape(f)} if lone_input else {}
            except Exception:
                shapes = {}
        for name, shape in shapes.items():
            seen = found.setdefault(name, [[d, d] for d in shape])
            if len(seen) == len(shape):
                found[name] = [[min(lo, d), max(hi, d)] for (lo, hi), d in zip(seen, shape)]
    return found


def outside(ranges: list[dict] | None, covered: dict[str, list[list[int]]]) -> list[str]:
    """Each profile whose range of a dynamic dim leaves the sizes calibrated (the batch aside: activation
    ranges do not depend on it), said as a warning; `covered` as sizes_in gives it."""
    found = []
    for profile in ranges or ():
        for name, r in profile["inputs"].items():
            seen = covered.get(name)
            for dim, (lo, hi) in enumerate(zip(r["min"], r["max"])):
                if seen is None or dim >= len(seen) or (dim == 0 and len(r["min"]) >= 2) or lo == hi \
                        or seen[dim][0] <= lo and hi <= seen[dim][1]:
                    continue
                data = f"{seen[dim][0]}" if seen[dim][0] == seen[dim][1] else f"{seen[dim][0]}..{seen[dim][1]}"
                found.append(f"profile {profile['name']!r} takes {name} dim {dim} from {lo} to {hi}, the calibration "
                             f"data only {data}: give calibration data at those sizes too")
    return found
