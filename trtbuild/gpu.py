"""GPU detection through NVML. No driver or no GPU means a CPU-only machine, never a crash.

NVML lists every GPU of the host; CUDA_VISIBLE_DEVICES (indices or UUIDs, as CUDA reads it) limits
them to the ones this process may use, as it limits CUDA.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: str  # "8.6"
    memory_bytes: int
    driver: str
    uuid: str = ""  # "GPU-8c3e...": how a worker is pointed at this GPU (CUDA_VISIBLE_DEVICES)

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")


@functools.lru_cache(maxsize=1)
def detect_gpus() -> tuple[Gpu, ...]:
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return ()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                Gpu(
                    index=i,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    compute_capability=f"{major}.{minor}",
                    memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                    driver=driver,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                )
            )
        return visible(tuple(gpus), os.environ.get("CUDA_VISIBLE_DEVICES"))
    except pynvml.NVMLError:
        return ()
    finally:
        pynvml.nvmlShutdown()


def visible(gpus: tuple[Gpu, ...], setting: str | None) -> tuple[Gpu, ...]:
    """The GPUs CUDA_VISIBLE_DEVICES lets this process use, in its order: indices or UUID prefixes,
    up to the first entry that names none (as CUDA reads it); unset means all, empty means none."""
    if setting is None:
        return gpus
    chosen = []
    for entry in (e.strip() for e in setting.split(",")):
        match = [g for g in gpus if (entry.isdigit() and g.index == int(entry))
                 or (entry.startswith("GPU-") and g.uuid.startswith(entry))]
        if len(match) != 1:
            break
        chosen.append(match[0])
    return tuple(chosen)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
