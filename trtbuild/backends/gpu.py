"""GPU detection through NVML. No driver or no GPU means a CPU-only machine, never a crash.

NVML lists every GPU of the host; CUDA_VISIBLE_DEVICES (indices or UUIDs, as CUDA reads it) limits
them to the ones this process may use, as it limits CUDA.

A build keeps NVML's answer in its cache (remember_in), under a fingerprint of what changes with
the GPU set: the boot, the NVIDIA device files, the driver's version and its per-GPU records (model
and UUID), the NVML library's search path, and pynvml. A run whose fingerprint matches reads the
answer instead of loading pynvml and NVML (tens of milliseconds, on every no-op build).
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from trtbuild.store.fsutil import read_json_or_warn
from trtbuild.store.hashing import digest_json

_record: Path | None = None  # where NVML's answer is kept between runs; None: NVML every run


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


def remember_in(path: Path | None) -> None:
    """Keep NVML's answer in `path` (the user's own folder of the build cache) for the next runs on this GPU
    set; None: ask NVML every run."""
    global _record
    _record = path


@functools.lru_cache(maxsize=1)
def detect_gpus() -> tuple[Gpu, ...]:
    fingerprint = _fingerprint() if _record else None
    gpus = _recorded(fingerprint) if fingerprint else None
    if gpus is None:
        gpus, definite = _ask_nvml()
        # Recorded only when NVML answered for sure and nothing moved while it did.
        if fingerprint and definite and _fingerprint() == fingerprint:
            _keep(fingerprint, gpus)
    return visible(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))


def _ask_nvml() -> tuple[tuple[Gpu, ...], bool]:
    """Every GPU NVML lists, and whether that is a definite answer: not installed, no library or no
    driver are; any other NVML error (a GPU being reset, a driver busy) is asked again next run."""
    try:
        import pynvml
    except ImportError:
        return (), True
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return (), getattr(exc, "value", None) in (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
                                                   pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
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
        return tuple(gpus), True
    except pynvml.NVMLError:
        return (), False
    finally:
        pynvml.nvmlShutdown()


def _fingerprint() -> str | None:
    """What changes when the GPUs NVML would list may have (Linux); None where it cannot be read, or
    where pynvml is not a plain installed module: then NVML is asked on every run."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text()
        spec = importlib.util.find_spec("pynvml")
        devices = sorted(name for name in os.listdir("/dev") if name.startswith("nvidia") or name == "dxg")
    except (OSError, ValueError):  # not Linux; a pynvml without a spec
        return None
    library_path = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    return digest_json({
        "boot": boot,
        "devices": devices,  # a container's GPUs, /dev/dxg under WSL
        "driver": _read("/proc/driver/nvidia/version"),
        "gpus": [_read(p) for p in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information"))],  # model, UUID
        "libraries": [_stat("/etc/ld.so.cache"), library_path, [_stat(p) for p in library_path]],
        "pynvml": spec and [spec.origin, _stat(spec.origin)],
    })


def _recorded(fingerprint: str) -> tuple[Gpu, ...] | None:
    try:
        record = read_json_or_warn(_record, "the kept GPU record")
        if record["fingerprint"] == fingerprint:
            return tuple(Gpu(**gpu) for gpu in record["gpus"])
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: ask NVML
        pass
    return None


def _keep(fingerprint: str, gpus: tuple[Gpu, ...]) -> None:
    from trtbuild.store.fsutil import atomic_write

    try:
        atomic_write(_record, json.dumps({"fingerprint": fingerprint, "gpus": [asdict(g) for g in gpus]}).encode(),
                     over_folder=True)
    except OSError:  # a cache this user cannot write to: NVML again next run
        pass


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _stat(path: str | None) -> list[int] | None:
    try:
        st = os.stat(path)
    except (OSError, TypeError):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


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
