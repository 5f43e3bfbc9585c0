"""NVML's answer kept in the cache: read back while the GPU set's fingerprint holds, asked again when
it moves. No GPU exists here: pynvml is a stand-in module that counts NVML sessions."""

from __future__ import annotations

import importlib
import json
import os
import sys
import textwrap

import pytest

from trtbuild.backends import gpu
FAKE_PYNVML = textwrap.dedent("""\
    import json, os
    NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_UNKNOWN = 12, 9, 999
    SESSIONS = []
    class NVMLError(Exception):
        def __init__(self, value):
            self.value = value
    def nvmlInit():
        SESSIONS.append(1)
        if os.environ.get("FAKE_NVML_ERROR"):
            raise NVMLError(int(os.environ["FAKE_NVML_ERROR"]))
    def nvmlShutdown(): pass
    def nvmlSystemGetDriverVersion(): return "580.0"
    def _gpus(): return json.loads(os.environ["FAKE_GPUS"])
    def nvmlDeviceGetCount(): return len(_gpus())
    def nvmlDeviceGetHandleByIndex(i): return _gpus()[i]
    def nvmlDeviceGetName(h): return h[0].encode()
    def nvmlDeviceGetCudaComputeCapability(h): return tuple(h[1])
    def nvmlDeviceGetUUID(h): return h[2]
    class _Memory: total = 24 << 30
    def nvmlDeviceGetMemoryInfo(h): return _Memory
""")
A10 = ["NVIDIA A10", [8, 6], "GPU-bbbb0000-2222"]
L4 = ["NVIDIA L4", [8, 9], "GPU-cccc0000-3333"]


@pytest.fixture
def nvml(tmp_path, monkeypatch):
    """A stand-in pynvml on sys.path (a real module file, as installed), one A10, a record in tmp_path."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "pynvml.py").write_text(FAKE_PYNVML)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    real = sys.modules.pop("pynvml", None)
    importlib.invalidate_caches()
    monkeypatch.setenv("FAKE_GPUS", json.dumps([A10]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(gpu, "_record", tmp_path / "gpus.json")
    gpu.detect_gpus.cache_clear()
    yield lambda: len(importlib.import_module("pynvml").SESSIONS)
    sys.modules.pop("pynvml", None)  # the stand-in goes; the real one, if loaded, comes back
    if real is not None:
        sys.modules["pynvml"] = real
    gpu.detect_gpus.cache_clear()


def detect():
    gpu.detect_gpus.cache_clear()
    return [(g.name, g.compute_capability) for g in gpu.detect_gpus()]


def test_the_answer_is_read_back_while_the_gpu_set_is_the_same(nvml, monkeypatch, tmp_path):
    assert detect() == [("NVIDIA A10", "8.6")] and nvml() == 1
    monkeypatch.setenv("FAKE_GPUS", json.dumps([A10, L4]))  # NVML would now say otherwise...
    assert detect() == [("NVIDIA A10", "8.6")] and nvml() == 1  # ...but nothing the fingerprint sees moved
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # applied to the recorded answer, run by run
    assert detect() == [] and nvml() == 1


def test_a_new_fingerprint_asks_nvml_again(nvml, monkeypatch):
    assert detect() == [("NVIDIA A10", "8.6")]
    monkeypatch.setenv("FAKE_GPUS", json.dumps([A10, L4]))
    fingerprint = gpu._fingerprint()
    monkeypatch.setattr(gpu, "_fingerprint", lambda: fingerprint + "'")  # a GPU added: its /proc record appears
    assert detect() == [("NVIDIA A10", "8.6"), ("NVIDIA L4", "8.9")] and nvml() == 2
    assert detect() == [("NVIDIA A10", "8.6"), ("NVIDIA L4", "8.9")] and nvml() == 2


def test_what_the_fingerprint_covers_moves_it(nvml, monkeypatch, tmp_path):
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)  # a GPU host's image sets it (CUDA's libraries)
    before = gpu._fingerprint()
    assert before is not None
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))  # where NVML's library is found
    assert gpu._fingerprint() != before
    monkeypatch.delenv("LD_LIBRARY_PATH")
    assert gpu._fingerprint() == before
    os.utime(tmp_path / "site" / "pynvml.py", ns=(0, 0))  # another pynvml
    assert gpu._fingerprint() != before


def test_only_definite_answers_are_kept(nvml, monkeypatch):
    monkeypatch.setenv("FAKE_NVML_ERROR", "999")  # a GPU being reset, a busy driver: ask again next run
    assert detect() == [] and detect() == [] and nvml() == 2
    monkeypatch.setenv("FAKE_NVML_ERROR", "12")  # no NVML library: kept, until the fingerprint moves
    assert detect() == [] and detect() == [] and nvml() == 3
    monkeypatch.delenv("FAKE_NVML_ERROR")
    assert detect() == [] and nvml() == 3


def test_without_a_record_nvml_is_asked_every_run(nvml, monkeypatch):
    monkeypatch.setattr(gpu, "_record", None)  # `trtbuild env`, `trtbuild path`: NVML itself
    assert detect() == [("NVIDIA A10", "8.6")] and detect() == [("NVIDIA A10", "8.6")] and nvml() == 2
