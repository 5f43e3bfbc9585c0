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
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith(".npy")), None)
            if member is None:
                return 1
            with archive.open(member) as f:
                magic = f.read(8)
                size_format = "<H" if magic[6] == 1 else "<I"
                (length,) = struct.unpack(size_format, f.read(struct.calcsize(size_format)))
                header = ast.literal_eval(f.read(length).decode("latin1"))
        shape = header["shape"]
        return int(shape[0]) if shape else 1
    except (OSError, zipfile.BadZipFile, ValueError, SyntaxError, KeyError, IndexError, struct.error):
        return 1
