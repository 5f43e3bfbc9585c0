"""Calibration from the datasets people have: a folder of images read with PIL, a torch DataLoader.
The images a loader reads are inputs of the precision step, found while it runs."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs, recipe_dict

pytestmark = pytest.mark.slow

PIL_LOADER = '''
from pathlib import Path

import numpy as np
from PIL import Image

IMAGES = Path(__file__).with_name("images")
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def load(path):
    image = Image.open(path).convert("RGB").resize((16, 16), Image.BILINEAR)
    return ((np.asarray(image, np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)  # HWC -> CHW


def batches():
    files = sorted(IMAGES.glob("*.png"))
    for i in range(0, len(files), 2):
        yield {"x": np.stack([load(f) for f in files[i:i + 2]])}
'''

DATALOADER = '''
import torch
from torch.utils.data import DataLoader, Dataset

from pil_loader import IMAGES, load


class Folder(Dataset):
    def __init__(self):
        self.files = sorted(IMAGES.glob("*.png"))

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return torch.from_numpy(load(self.files[i]))


def batches(workers=0):
    for images in DataLoader(Folder(), batch_size=2, shuffle=False, num_workers=workers):
        yield {"x": images}


def batches_in_worker_processes():
    yield from batches(workers=2)  # the images are read in forked processes
'''


def _images(project, count: int = 4, seed: int = 0) -> None:
    from PIL import Image

    folder = project.root / "images"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def _recipe(project, loader: str) -> None:
    (project.root / "pil_loader.py").write_text(PIL_LOADER)
    (project.root / "torch_loader.py").write_text(DATALOADER)
    data = recipe_dict("conv.onnx", precision="int8")
    data["source"]["python_path"] = ["."]
    data["precision"] = {"calibration": {"loader": loader, "batches": 2}, "max_relative_error": 10.0}
    project.write_recipe(data)


def _precision(report: dict) -> dict:
    return next(s for s in report["steps"] if s["step"] == "precision")


def test_an_image_folder_calibrates_and_its_images_are_inputs(project):
    needs("PIL")
    _images(project)
    _recipe(project, "pil_loader:batches")
    code, report = project.build()
    assert code == 0, _precision(report).get("error")
    assert _precision(report)["meta"]["calibration"] == {"batches": 2, "samples": 4, "batches_asked": 2,
                                                         "shapes": {"x": [[2, 2], [3, 3], [16, 16], [16, 16]]}}
    assert _precision(report)["status"] == "built"
    assert _precision(project.build()[1])["status"] == "cached"

    _images(project, count=1, seed=7)  # img0.png is replaced by another picture
    code, report = project.build()
    assert code == 0 and _precision(report)["status"] == "built"
    assert _precision(report)["reason"] == "images/img0.png changed (read while it ran)"

    (project.root / "images" / "img9.png").write_bytes((project.root / "images" / "img1.png").read_bytes())
    code, report = project.build("--dry-run")  # a new image in the folder
    assert _precision(report)["status"] == "would-run"
    assert _precision(report)["reason"] == "images/ changed (read while it ran)"


@pytest.mark.parametrize("loader", ["torch_loader:batches", "torch_loader:batches_in_worker_processes"])
def test_a_torch_dataloader_calibrates(project, loader):
    needs("torch")
    needs("PIL")
    _images(project)
    _recipe(project, loader)
    code, report = project.build()
    assert code == 0, _precision(report).get("error")
    assert _precision(report)["meta"]["calibration"]["samples"] == 4
    _images(project, count=1, seed=3)
    code, report = project.build()
    assert _precision(report)["status"] == "built" and "images/img0.png changed" in _precision(report)["reason"]
