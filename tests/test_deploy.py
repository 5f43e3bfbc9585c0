"""`trtbuild env` and `trtbuild path`: what this machine has, and which plan a service should load.

No GPU exists here, so the lookup is shown against a stand-in GPU list (NVML's answer on a GPU
machine); the plans themselves are real TensorRT-RTX builds.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import recipe_dict
from trtbuild.commands import deploy
from trtbuild.commands.cli import main
from trtbuild.commands.deploy import DeployError, find_plan
from trtbuild.backends.gpu import Gpu
from trtbuild.backends.target import installed_version


def fake_gpu(monkeypatch, cc: str) -> None:
    gpu = Gpu(0, f"Test GPU sm_{cc.replace('.', '')}", cc, 24 * 2**30, "560.0")
    monkeypatch.setattr(deploy, "detect_gpus", lambda: (gpu,))


def test_env_reports_backends_and_no_gpu(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["gpus"] == []
    assert info["backends"]["tensorrt-rtx"] == installed_version("tensorrt-rtx")
    assert info["default_target"].startswith("tensorrt-rtx-")
    assert info["precisions"]["int8"] == "ort-quantization"
    if importlib.util.find_spec("modelopt") is None:  # bf16 needs ModelOpt; fp16 falls back
        assert info["precisions"]["fp16"] == "ort-float16"
        assert "pip install --no-deps nvidia-modelopt" in info["precisions"]["bf16"]
    assert main(["env"]) == 0
    assert "none (no NVIDIA driver or GPU)" in capsys.readouterr().out


def test_path_without_a_gpu_fails_clearly(project, capsys):
    project.build()
    assert main(["path", "conv", "--cache-dir", str(project.cache)]) == 1
    assert "a TensorRT plan runs only on a GPU" in capsys.readouterr().err


def test_path_picks_the_plan_for_this_gpu(project, monkeypatch):
    data = recipe_dict("conv.onnx")
    data["targets"] = ["tensorrt-rtx", "tensorrt-rtx:sm86"]
    project.write_recipe(data)
    assert project.build()[0] == 0
    fake_gpu(monkeypatch, "8.6")
    assert find_plan("conv", project.cache).parent.name.endswith("-sm86")  # exact beats portable
    fake_gpu(monkeypatch, "8.9")
    assert find_plan("conv", project.cache).parent.name.endswith("-portable")
    fake_gpu(monkeypatch, "9.0")  # Hopper: TensorRT-RTX plans don't run there
    with pytest.raises(DeployError, match=r"none of the plans for 'conv' runs here.*sm_90"):
        find_plan("conv", project.cache)


def test_path_refuses_a_plan_from_another_tensorrt_version(project, monkeypatch):
    assert project.build()[0] == 0
    fake_gpu(monkeypatch, "8.6")
    monkeypatch.setattr(deploy, "installed_version", lambda backend: "9.9" if backend == "tensorrt-rtx" else None)
    with pytest.raises(DeployError, match="TensorRT-RTX 9.9. Rebuild here"):
        find_plan("conv", project.cache)


def test_path_for_an_unknown_recipe(project):
    with pytest.raises(DeployError, match="no plans for 'nope'"):
        find_plan("nope", project.cache)


def test_path_skips_a_full_tensorrt_plan_tied_to_another_gpu_model(tmp_path, monkeypatch):
    """A plan built without same-compute-capability compatibility runs only on the GPU model that built it."""
    meta = {"backend": "tensorrt", "backend_version": "10.13.3.9", "compute_capabilities": ["8.6"]}
    for folder, model in (("tensorrt-10.13.3.9-sm86-a10", "a10"), ("tensorrt-10.13.3.9-sm86-a40", "a40")):
        (tmp_path / "out" / "net" / folder).mkdir(parents=True)
        (tmp_path / "out" / "net" / folder / "model.plan").write_bytes(b"plan")
        (tmp_path / "out" / "net" / folder / "model.json").write_text(json.dumps(meta | {"gpu_model": model}))
    monkeypatch.setattr(deploy, "installed_version", lambda backend: "10.13.3.9")
    monkeypatch.setattr(deploy, "detect_gpus", lambda: (Gpu(0, "NVIDIA A40", "8.6", 48 * 2**30, "580.0"),))
    assert find_plan("net", tmp_path).parent.name == "tensorrt-10.13.3.9-sm86-a40"
    monkeypatch.setattr(deploy, "detect_gpus", lambda: (Gpu(0, "NVIDIA RTX A6000", "8.6", 48 * 2**30, "580.0"),))
    with pytest.raises(DeployError, match="none of the plans"):
        find_plan("net", tmp_path)


def test_path_target_finds_a_plan_whose_compute_capabilities_cover_it(project, capsys):
    data = recipe_dict("conv.onnx")
    data["targets"] = ["tensorrt-rtx:sm89+sm120", "tensorrt-rtx"]
    project.write_recipe(data)
    assert project.build()[0] == 0
    assert find_plan("conv", project.cache, target="tensorrt-rtx:sm89").parent.name.endswith("-sm89+sm120")
    assert find_plan("conv", project.cache, target="tensorrt-rtx:sm120+sm89").parent.name.endswith("-sm89+sm120")
    assert find_plan("conv", project.cache, target="tensorrt-rtx").parent.name.endswith("-portable")
    assert find_plan("conv", project.cache, target="tensorrt-rtx:sm86").parent.name.endswith("-portable")
    with pytest.raises(DeployError, match="no tensorrt-rtx:sm90 plan for 'conv'"):  # Hopper: none runs there
        find_plan("conv", project.cache, target="tensorrt-rtx:sm90")
    assert main(["path", "conv", "--cache-dir", str(project.cache), "--target", "tensorrt-rtx:sm89"]) == 0
    assert capsys.readouterr().out.strip().endswith("-sm89+sm120/model.plan")


def test_an_fp8_plan_is_never_chosen_for_a_gpu_without_fp8(tmp_path, monkeypatch):
    meta = {"backend": "tensorrt-rtx", "backend_version": installed_version("tensorrt-rtx"),
            "compute_capabilities": "portable", "gpu_model": None, "precision": "fp8"}
    folder = tmp_path / "out" / "net" / "tensorrt-rtx-x-portable"
    folder.mkdir(parents=True)
    (folder / "model.plan").write_bytes(b"plan")
    (folder / "model.json").write_text(json.dumps(meta))
    fake_gpu(monkeypatch, "8.9")
    assert find_plan("net", tmp_path).parent.name == folder.name
    fake_gpu(monkeypatch, "8.6")
    with pytest.raises(DeployError, match="none of the plans"):
        find_plan("net", tmp_path)
    with pytest.raises(DeployError, match="no tensorrt-rtx:sm86 plan"):
        find_plan("net", tmp_path, target="tensorrt-rtx:sm86")
