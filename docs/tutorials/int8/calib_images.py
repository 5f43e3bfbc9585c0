"""Calibration batches from the images in images/: resized, scaled and normalized as at inference."""
from pathlib import Path

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
HERE = Path(__file__).parent


def preprocess(path: Path) -> np.ndarray:
    image = Image.open(path).convert("RGB").resize((64, 64))
    return ((np.asarray(image, np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)  # HWC -> CHW


def batches(batch_size: int = 4):
    files = sorted((HERE / "images").glob("*.png"))
    for start in range(0, len(files), batch_size):
        yield {"image": np.stack([preprocess(f) for f in files[start:start + batch_size]])}
