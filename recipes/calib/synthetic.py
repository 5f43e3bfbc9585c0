"""Calibration batches for the example int8 recipes: seeded random images, so the examples run
anywhere. For a real model, point precision.calibration at real data (a few hundred samples)."""

from __future__ import annotations

import numpy as np


def imagenet_like(batches: int = 8, batch_size: int = 4, size: int = 224, name: str = "input"):
    rng = np.random.default_rng(1234)
    for _ in range(batches):
        yield {name: rng.standard_normal((batch_size, 3, size, size)).astype(np.float32)}
