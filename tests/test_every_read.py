"""Every read is seen: what a model's code reads by any means (Hugging Face from_pretrained, safetensors,
h5py, runpy, a check for a file that is not there, a module imported by a computed name) is in its export's
record, digested when read, under a label that is unique and portable; what does not change an artifact
(installed packages wherever they sit, logging variables, the checkout's path) changes no key."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs
from helpers import save_tiny_bert, tiny_bert_recipe
from trtbuild.store import syscall_filter

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(syscall_filter.unavailable()),
                                                   reason=f"system calls not watched here: {syscall_filter.unavailable()}")]

ENGINE = {"backend": "tensorrt-rtx", "optimization_level": 0}


def cli(recipe: Path, *args: str, cache: Path | None = None, env: dict | None = None) -> tuple[int, dict, str]:
    """The real CLI in a process of its own: (exit code, {step: report entry}, stderr)."""
    report = recipe.parent / "report.json"
    report.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "trtbuild", str(recipe), "--cache-dir", str(cache or recipe.parent / "cache"),
                           "--report", str(report), *args], capture_output=True, text=True,
                          env=os.environ | (env or {}), timeout=600)
    steps = {s["step"]: s for s in json.loads(report.read_text())["steps"]} if report.exists() else {}
    return done.returncode, steps, done.stderr


def recipe(folder: Path, entrypoint: str, opset: int | None = 17, **source) -> Path:
    data = {"name": "net", "source": {"framework": "pytorch", "entrypoint": entrypoint, **source},
            "inputs": {"x": {"shape": [1, 3, 8, 8]}}, "engine": ENGINE}
    if opset:
        data["onnx"] = {"opset": opset}
    (folder / "net.yaml").write_text(json.dumps(data))
    return folder / "net.yaml"


def export_record(cache: Path, steps: dict) -> dict:
    return json.loads(next((cache / "actions").glob(f"*/{steps['export']['key']}.json")).read_text())




def test_a_retrained_hugging_face_checkpoint_rebuilds_and_an_identical_one_does_not(tmp_path, tiny_berts):
    needs("transformers")
    save = functools.partial(save_tiny_bert, tmp_path, made=tiny_berts)
    save(0)
    tiny_bert_recipe(tmp_path, {"input_ids": {"dtype": "int64", "shape": [2, 16]},
                                "attention_mask": {"dtype": "int64", "shape": [2, 16]}}, onnx={"opset": 17})
    code, first, err = cli(tmp_path / "net.yaml")
    assert code == 0, err
    record = export_record(tmp_path / "cache", first)
    assert set(record["discovered"]["files"]) >= {"ckpt/config.json", "ckpt/model.safetensors"}
    assert record["meta"]["reads_observed"] == "system calls"

    save(0)  # the same weights written again: nothing to do
    code, same, err = cli(tmp_path / "net.yaml", "--dry-run")
    assert code == 0 and same["export"]["status"] == "cached", same["export"]["reason"]

    save(1)  # retrained: the export, and everything after it, rebuilds
    code, dry, _ = cli(tmp_path / "net.yaml", "--dry-run")
    assert dry["export"]["status"] == "would-run"
    assert dry["export"]["reason"] == "ckpt/model.safetensors changed (read while it ran)"
    code, second, err = cli(tmp_path / "net.yaml")
    assert code == 0 and second["export"]["status"] == "built", err
    assert second["engine"]["key"] != first["engine"]["key"]


NATIVE_READER = """
import os, runpy
from pathlib import Path

import h5py
import torch
from safetensors.numpy import load_file

HERE = Path(__file__).parent


def build():
    scale = float(load_file(str(HERE / "w.safetensors"))["w"][0])  # read by Rust
    with h5py.File(HERE / "k.h5", "r") as f:  # read by HDF5's C library
        scale += float(f["a"][0])
    scale += runpy.run_path(str(HERE / "cfg.py"))["EXTRA"]  # a .py file read as data
    if os.path.exists(HERE / "override.json"):  # looked for, absent at first
        scale += 100
    net = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        net.weight.mul_(scale)
    return net
"""


def test_native_readers_py_files_run_as_data_and_absent_files_are_inputs(tmp_path):
    needs("torch")
    needs("h5py")
    import h5py
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.ones(3, np.float32)}, str(tmp_path / "w.safetensors"))
    with h5py.File(tmp_path / "k.h5", "w") as f:
        f["a"] = np.arange(3, dtype=np.float32)
    (tmp_path / "cfg.py").write_text("EXTRA = 0.5\n")
    (tmp_path / "net.py").write_text(NATIVE_READER)
    net = recipe(tmp_path, "net:build")
    code, first, err = cli(net)
    assert code == 0, err
    found = export_record(tmp_path / "cache", first)["discovered"]
    assert {"w.safetensors", "k.h5", "cfg.py"} <= set(found["files"])
    assert "override.json" in found["absent"]

    code, again, _ = cli(net, "--dry-run")  # nothing moved: nothing reruns
    assert again["export"]["status"] == "cached", again["export"]["reason"]

    def changed_by(edit, name: str, reason: str) -> None:
        keep = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        edit()
        code, dry, _ = cli(net, "--dry-run")
        assert dry["export"]["status"] == "would-run", name
        assert dry["export"]["reason"] == f"{name} {reason} (read while it ran)"
        for p in tmp_path.iterdir():
            if p.is_file() and p not in keep:
                p.unlink()
        for p, data in keep.items():
            p.write_bytes(data)

    changed_by(lambda: save_file({"w": np.full(3, 2, np.float32)}, str(tmp_path / "w.safetensors")), "w.safetensors",
               "changed")
    changed_by(lambda: h5py.File(tmp_path / "k.h5", "w").__exit__(None, None, None), "k.h5", "changed")
    changed_by(lambda: (tmp_path / "cfg.py").write_text("EXTRA = 1.5\n"), "cfg.py", "changed")
    changed_by(lambda: (tmp_path / "override.json").write_text("{}"), "override.json", "appeared")


def test_a_module_imported_by_a_computed_name_and_edited_during_the_step_fails_it(tmp_path):
    needs("torch")
    (tmp_path / "helper.py").write_text("SCALE = 2.0\n")
    (tmp_path / "net.py").write_text(
        "import importlib\nfrom pathlib import Path\nimport torch\n\n\n"
        "def build():\n"
        "    scale = importlib.import_module('hel' + 'per').SCALE\n"
        "    Path(__file__).with_name('helper.py').write_text('SCALE = 3.0\\n')  # edited while the step runs\n"
        "    return torch.nn.Conv2d(3, int(scale), 1)\n")
    code, steps, err = cli(recipe(tmp_path, "net:build"))
    assert code == 1
    assert steps["export"]["status"] == "failed"
    assert "helper.py changed while the step ran" in steps["export"]["error"]
    assert not any((tmp_path / "cache" / "actions").glob("*/*.json")) or all(
        json.loads(p.read_text())["step"] != "export" for p in (tmp_path / "cache" / "actions").glob("*/*.json"))


def test_two_files_with_one_name_in_two_folders_are_two_inputs(tmp_path):
    needs("torch")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "utils.py").write_text("CHANNELS = 4\n")  # beside the entrypoint: it imports this one
    (tmp_path / "utils.py").write_text("CHANNELS = 4\n")  # at the project's root, listed in deps
    (tmp_path / "models" / "net.py").write_text(
        "import torch\nfrom utils import CHANNELS\n\n\ndef build():\n    return torch.nn.Conv2d(3, CHANNELS, 1)\n")
    net = recipe(tmp_path, "net:build", python_path=["models"], deps=["utils.py"])
    code, first, err = cli(net)
    assert code == 0, err
    (tmp_path / "models" / "utils.py").write_text("CHANNELS = 5\n")
    code, dry, _ = cli(net, "--dry-run")
    assert dry["export"]["status"] == "would-run"
    assert dry["export"]["reason"].startswith("inputs.code.models/utils.py changed")


DATA_READER = """
import numpy as np
import torch


def build(data: str):
    net = torch.nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        net.weight.mul_(float(np.load(data)[0]))
    return net
"""


def test_checkouts_at_other_depths_share_keys_records_and_exported_bytes(tmp_path):
    """A data file outside the project is named by its absolute path, the project's files relative to it;
    the exported ONNX bytes (dynamo's, at the default opset, and TorchScript's) do not depend on where the
    checkout lies."""
    needs("torch")
    import numpy as np

    data = tmp_path / "datasets" / "scale.npy"
    data.parent.mkdir()
    np.save(data, np.array([3.0], np.float32))
    first = tmp_path / "a" / "project"
    (first / "recipes").mkdir(parents=True)
    (first / "models").mkdir()
    (first / "models" / "net.py").write_text(DATA_READER)
    recipe(first / "recipes", "net:build", opset=None, python_path=["../models"], kwargs={"data": str(data)})
    second = tmp_path / "b" / "c" / "d" / "project"
    shutil.copytree(first, second)
    shared = tmp_path / "cache"
    code, built, err = cli(first / "recipes" / "net.yaml", cache=shared)
    assert code == 0, err
    found = export_record(shared, built)["discovered"]
    assert found["files"] == {str(data): found["files"][str(data)]}
    code, other, err = cli(second / "recipes" / "net.yaml", "--dry-run", cache=shared)
    assert {s["status"] for n, s in other.items() if n != "verify"} == {"cached"}, err

    code, alone, err = cli(second / "recipes" / "net.yaml", cache=tmp_path / "cache2")  # exported afresh
    assert code == 0, err
    assert alone["export"]["key"] == built["export"]["key"]
    outputs = [export_record(c, s)["outputs"]["model.onnx"]["digest"] for c, s in ((shared, built),
                                                                                  (tmp_path / "cache2", alone))]
    assert outputs[0] == outputs[1]


def _distribution(site: Path, version: str) -> None:
    """mylib, laid out as pip --target lays out a wheel: its package and a .dist-info with a RECORD."""
    (site / "mylib").mkdir(parents=True, exist_ok=True)
    (site / "mylib" / "__init__.py").write_text("SCALE = 2.0\n")
    for old in site.glob("mylib-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"mylib-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mylib\nVersion: {version}\n")
    (info / "RECORD").write_text(f"mylib/__init__.py,,\nmylib-{version}.dist-info/METADATA,,\n"
                                 f"mylib-{version}.dist-info/RECORD,,\n")


def test_a_package_on_pythonpath_is_a_tool_by_version_and_logging_variables_change_nothing(tmp_path):
    needs("torch")
    site = tmp_path / "site"
    _distribution(site, "1.0")
    (tmp_path / "net.py").write_text(
        "import torch\nimport mylib\n\n\ndef build():\n    return torch.nn.Conv2d(3, int(mylib.SCALE), 1)\n")
    net = recipe(tmp_path, "net:build")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    code, first, err = cli(net, env=env)
    assert code == 0, err
    found = export_record(tmp_path / "cache", first)["discovered"]
    assert found["tools"]["mylib"] == "1.0"
    assert not [label for label in found.get("files", {}) if "site" in label], found

    logging = {"TORCH_LOGS": "onnx", "TORCH_SHOW_CPP_STACKTRACES": "1", "TORCH_CPP_LOG_LEVEL": "INFO"}
    code, dry, _ = cli(net, "--dry-run", env=env | logging)
    assert dry["export"]["status"] == "cached", dry["export"]["reason"]

    _distribution(site, "1.1")
    code, dry, _ = cli(net, "--dry-run", env=env)
    assert dry["export"]["status"] == "would-run"
    assert dry["export"]["reason"] == "mylib 1.0 -> 1.1 (read while it ran)"
