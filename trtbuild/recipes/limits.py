"""Bounds of recipe numbers and names: what the backends, the filesystem and Python accept, so a value
past them is refused at its recipe line (exit 2) rather than failing deep inside a step (exit 1)."""

from __future__ import annotations

MAX_DIM = 2**31 - 1  # one dim of a shape or profile: TensorRT's profiles refuse 2**31 on a rank-2 input
MAX_WORKSPACE = 2**60  # bytes (1 EiB): TensorRT-RTX builds with 2**62 and fails from 2**63 - 1 on
MAX_SEED = 2**64 - 1  # numpy's and torch's seeds are unsigned 64-bit
MAX_STEP_TIMEOUT = 10**9  # seconds (31 years): threads' timers overflow past about 9.2e9
MAX_NAME = 100  # characters of a recipe name: it names files (out/.<name>.<id>, state/<name>.json), 255 bytes at most
MAX_TARGET = 64  # characters of one target: it names a folder under out/<name>/
