"""GPU hosts: the GPUs CUDA_VISIBLE_DEVICES leaves visible, and the GPU each engine step's worker uses.

No GPU exists here: NVML's answers are simulated (a stand-in pynvml module, or detect_gpus's result)."""

from __future__ import annotations

import os
import sys
import types

from conftest import full_tensorrt, recipe_dict
from trtbuild.backends import target
from trtbuild.store.cache import Cache
from trtbuild.backends.gpu import Gpu, detect_gpus, visible
from trtbuild.planning.graph import compile_recipe
from trtbuild.recipes.loader import load_recipe

A100 = Gpu(0, "NVIDIA A100-SXM4-80GB", "8.0", 80 * 2**30, "580.0", "GPU-aaaa0000-1111")
A10 = Gpu(1, "NVIDIA A10", "8.6", 24 * 2**30, "580.0", "GPU-bbbb0000-2222")


def test_cuda_visible_devices_limits_the_gpus_as_cuda_does():
    both = (A100, A10)
    assert visible(both, None) == both
    assert visible(both, "") == ()
    assert visible(both, "1") == (A10,)
    assert visible(both, "1,0") == (A10, A100)  # CUDA's order, not NVML's
    assert visible(both, "GPU-bbbb") == (A10,)  # a UUID prefix
    assert visible(both, "0,7,1") == (A100,)  # CUDA stops at the first entry that names no GPU


def test_nvml_answers_are_read_through_cuda_visible_devices(monkeypatch):
    def nvml_device(i):
        return {"name": [A100, A10][i].name.encode(), "cc": [(8, 0), (8, 6)][i], "uuid": [A100, A10][i].uuid}

    nvml = types.SimpleNamespace(
        NVMLError=RuntimeError, nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: "580.0", nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=nvml_device, nvmlDeviceGetName=lambda h: h["name"],
        nvmlDeviceGetCudaComputeCapability=lambda h: h["cc"], nvmlDeviceGetUUID=lambda h: h["uuid"],
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=24 * 2**30))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb0000-2222")
    detect_gpus.cache_clear()
    try:
        [found] = detect_gpus()
        assert (found.index, found.name, found.compute_capability, found.uuid) == (1, "NVIDIA A10", "8.6", A10.uuid)
    finally:
        detect_gpus.cache_clear()


def test_a_full_tensorrt_engine_builds_on_the_gpu_of_its_target(project, tmp_path, monkeypatch, request):
    """NVML's first GPU is an A100 (sm_80); the target is sm86: the engine step's worker gets the A10."""
    (tmp_path / "site").mkdir()
    full_tensorrt(tmp_path / "site", b"SAME_COMPUTE_CAPABILITY", monkeypatch, request, A10.name, "8.6")
    monkeypatch.setattr(target, "detect_gpus", lambda: (A100, A10))
    data = recipe_dict("conv.onnx")
    data["targets"] = ["tensorrt:sm86", "tensorrt-rtx"]
    project.write_recipe(data)
    steps = compile_recipe(load_recipe(project.recipe), Cache(project.cache))
    engines = {s.target.spec: s for s in steps if s.name == "engine"}
    assert engines["tensorrt:sm86"].context["cuda_device"] == A10.uuid
    assert "cuda_device" not in engines["tensorrt-rtx:portable"].context  # TensorRT-RTX builds without a GPU
    verify = {s.target.spec: s for s in steps if s.name == "verify"}
    assert verify["tensorrt:sm86"].context == {"cuda_device": A10.uuid}
    assert verify["tensorrt-rtx:portable"].context == {"cuda_device": A100.uuid}  # the first that runs it


def test_the_worker_is_pointed_at_that_gpu(monkeypatch):
    from trtbuild.steps import Job, use_gpu_of

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    job = Job("engine", {}, {}, None, {"cuda_device": A10.uuid})
    assert use_gpu_of(job) == A10.uuid
    assert os.environ["CUDA_VISIBLE_DEVICES"] == A10.uuid
