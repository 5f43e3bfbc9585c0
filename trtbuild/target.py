"""What an engine is built for: backend, backend version and GPU architecture.

Resolved without importing TensorRT (package metadata only), so a no-op build stays fast.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from dataclasses import dataclass

from trtbuild.errors import UsageError
from trtbuild.gpu import detect_gpus

# backend name -> (Python module, distribution)
BACKENDS = {"tensorrt": ("tensorrt", "tensorrt"), "tensorrt-rtx": ("tensorrt_rtx", "tensorrt-rtx")}
INSTALL_HINT = {
    "tensorrt": "pip install 'trtbuild[tensorrt]'  (full TensorRT, on a machine with an NVIDIA GPU)",
    "tensorrt-rtx": "pip install 'trtbuild[rtx]'  (TensorRT-RTX builds engines even without a GPU)",
}


@dataclass(frozen=True)
class Target:
    backend: str
    version: str
    compute_capabilities: tuple[str, ...]  # () = portable TensorRT-RTX plan

    @property
    def arch(self) -> str:
        if not self.compute_capabilities:
            return "portable"
        return "+".join("sm" + cc.replace(".", "") for cc in self.compute_capabilities)

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.version}-{self.arch}"

    def to_dict(self) -> dict:
        return {"backend": self.backend, "version": self.version, "compute_capabilities": list(self.compute_capabilities)}


@functools.lru_cache(maxsize=None)
def installed_version(backend: str) -> str | None:
    module, dist = BACKENDS[backend]
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def resolve_target(backend: str, compute_capabilities: list[str]) -> Target:
    """Pick the backend (`auto`: TensorRT with a GPU, else TensorRT-RTX) and the architecture."""
    if backend == "auto":
        if installed_version("tensorrt") and detect_gpus():
            backend = "tensorrt"
        elif installed_version("tensorrt-rtx"):
            backend = "tensorrt-rtx"
        else:
            raise UsageError(
                "no TensorRT backend found: install one of\n  " + "\n  ".join(INSTALL_HINT.values())
            )
    version = installed_version(backend)
    if version is None:
        raise UsageError(f"backend {backend!r} is not installed: {INSTALL_HINT[backend]}")
    if backend == "tensorrt-rtx":
        return Target(backend, version, tuple(compute_capabilities))
    if compute_capabilities:
        raise UsageError("engine.compute_capabilities applies to TensorRT-RTX only; TensorRT builds for the local GPU")
    gpus = detect_gpus()
    if not gpus:
        raise UsageError("backend 'tensorrt' builds for the local GPU and none was found; use --backend tensorrt-rtx")
    return Target(backend, version, (gpus[0].compute_capability,))


def target_from_dict(data: dict) -> Target:
    return Target(data["backend"], data["version"], tuple(data["compute_capabilities"]))


def cannot_run_here(target: Target) -> str | None:
    """Why no local GPU can run engines built for `target`; None when one can."""
    gpus = detect_gpus()
    if target.backend == "tensorrt-rtx":
        # Portable TensorRT-RTX plans run on Ampere, Ada and Blackwell client GPUs (8.x, 12.x), not Hopper.
        wanted = target.compute_capabilities
        usable = [g for g in gpus if (g.compute_capability in wanted if wanted else
                                      g.compute_capability.split(".")[0] in ("8", "12"))]
        need = " or ".join(wanted) if wanted else "8.x or 12.x"
    else:
        usable = [g for g in gpus if g.compute_capability in target.compute_capabilities]
        need = " or ".join(target.compute_capabilities)
    if usable:
        return None
    here = ", ".join(f"{g.name} ({g.compute_capability})" for g in gpus) or "no NVIDIA GPU"
    return f"running this engine needs a GPU with compute capability {need}; this machine has {here}"
