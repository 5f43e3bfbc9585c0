"""What the recipe schema (validation) and the loader (reading) both use, so neither imports the other."""

from __future__ import annotations

# Precisions made by calibrated Q/DQ nodes: they need precision.calibration.
QUANTIZED_PRECISIONS = ("int8", "fp8")


def spec_dims(spec) -> list[int]:
    """The shape, or the one min/opt/max describe (-1 where min != max)."""
    if spec.shape is not None:
        return list(spec.shape)
    return [lo if lo == hi else -1 for lo, hi in zip(spec.min, spec.max)]


def line_for(lines: dict, loc: tuple) -> int:
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = part if part.replace("_", "a").isalnum() else f'"{part}"'
        out += f".{name}" if out else name
    return out
