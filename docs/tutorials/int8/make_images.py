"""Writes a few 80x80 PNG images into images/, standing in for your own photos."""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

count = int(sys.argv[1]) if len(sys.argv) > 1 else 12
rng = np.random.default_rng(7)
Path("images").mkdir(exist_ok=True)
y, x = np.mgrid[0:80, 0:80] / 80.0
for i in range(count):
    r, g, b = rng.uniform(0.2, 1.0, 3)
    pixels = np.stack([r * x, g * y, b * (1 - x * y)], axis=-1) + rng.normal(0, 0.05, (80, 80, 3))
    Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(f"images/photo_{i:03d}.png")
