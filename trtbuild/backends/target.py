"""What an engine is built for: backend, backend version and GPU architecture.

Resolved without importing TensorRT (package metadata only), so a no-op build stays fast.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from trtbuild.errors import UsageError
from trtbuild.backends.gpu import detect_gpus
from trtbuild.store import versions

from trtbuild.backends import REGISTRY, backend

# Built-in backend name -> how to install it.
INSTALL_HINT = {name: backend(name).INSTALL_HINT for name in REGISTRY}


@dataclass(frozen=True)
class Target:
    backend: str
    version: str
    compute_capabilities: tuple[str, ...]  # () = portable TensorRT-RTX plan
    # Full TensorRT without a same-compute-capability build: the plan runs only on this GPU model.
    gpu_model: str = ""

    @property
    def arch(self) -> str:
        if not self.compute_capabilities:
            return "portable"
        return "+".join("sm" + cc.replace(".", "") for cc in self.compute_capabilities)

    @property
    def spec(self) -> str:
        """The target as written in a recipe: "tensorrt-rtx:portable", "tensorrt:sm86"."""
        return f"{self.backend}:{self.arch}"

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.version}-{self.arch}" + (f"-{self.gpu_model}" if self.gpu_model else "")

    @property
    def title(self) -> str:
        """The target as a table heads it: its id, or, for one this machine cannot resolve (full TensorRT not
        installed, no GPU to build for), what it is and what is missing."""
        local, missing = self.compute_capabilities == ("local",), self.version == "none"
        if not (local or missing):
            return self.id
        if local:
            return f"{self.backend}{'' if missing else '-' + self.version} ({'not installed, ' if missing else ''}no GPU)"
        return f"{self.spec} (not installed)"

    def to_dict(self) -> dict:
        return {"backend": self.backend, "version": self.version, "compute_capabilities": list(self.compute_capabilities),
                "gpu_model": self.gpu_model}


@functools.cache
def installed_version(backend: str) -> str | None:
    """The backend's version, found without importing it: from the distribution that installed its
    module (tensorrt, tensorrt-cu12, tensorrt_rtx_cu13...), else from the module's own source (a
    system package such as JetPack's python3-libnvinfer has no distribution metadata)."""
    found = backend_of(backend)
    module, dist = found.MODULE, found.DISTRIBUTION
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    version = versions.version(dist)
    if version is not None:
        return version
    # Only then scan every installed distribution (a third of a second): tensorrt-cu12 and the like.
    for name in sorted(_packages_distributions().get(module, ())):
        version = versions.version(name)
        if version is not None:
            return version
    return _version_in_source(spec.origin)


@functools.cache
def _packages_distributions() -> dict:
    from importlib import metadata

    return metadata.packages_distributions()


def _version_in_source(origin: str | None, depth: int = 2) -> str | None:
    """`__version__ = "10.3.0"` in a module's file, following one `from X import __version__`."""
    if not origin or not origin.endswith(".py"):
        return None
    text = Path(origin).read_text(errors="replace")
    found = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.MULTILINE)
    if found:
        return found.group(1)
    source = re.search(r"^from\s+([\w.]+)\s+import\s+.*\b__version__\b", text, re.MULTILINE)
    if source and depth:
        spec = importlib.util.find_spec(source.group(1))
        return _version_in_source(spec.origin if spec else None, depth - 1)
    return None


# BACKEND[:ARCH]; which backends exist is the backends' business (trtbuild.backends.backend).
TARGET_PATTERN = r"^(auto|[a-z][a-z0-9]*(-[a-z0-9]+)*)(:(portable|sm[1-9]\d{1,2}(\+sm[1-9]\d{1,2})*))?$"  # sm75 .. sm121
RTX_COMPUTE_CAPABILITIES = backend("tensorrt-rtx").COMPUTE_CAPABILITIES


def sm_to_cc(sm: str) -> str:
    """"sm86" -> "8.6", "sm120" -> "12.0"."""
    digits = sm.removeprefix("sm")
    return f"{digits[:-1]}.{digits[-1]}"


def compute_capabilities(arch: str) -> tuple[str, ...]:
    """"sm120+sm86" -> ("8.6", "12.0"): a set, in one order, so that sm120+sm86 and sm86+sm120 are
    one target (one key, one folder); "" or "portable" -> ()."""
    if arch in ("", "portable"):
        return ()
    return tuple(sorted({sm_to_cc(sm) for sm in arch.split("+")}, key=lambda cc: tuple(map(int, cc.split(".")))))


def resolve_target(spec: str) -> tuple[Target, str | None]:
    """A target spec ("tensorrt-rtx", "tensorrt-rtx:sm86+sm120", "tensorrt:sm90", "auto") -> the Target,
    and why this machine cannot build it (None when it can).

    TensorRT-RTX builds for any compute capability on any machine. Full TensorRT builds only for the
    GPUs present, so other SMs are reported as needing that GPU, never built wrong.
    """
    backend, _, arch = spec.partition(":")
    caps = compute_capabilities(arch)
    if backend == "auto":
        if installed_version("tensorrt") and detect_gpus():
            backend = "tensorrt"
        elif installed_version("tensorrt-rtx"):
            backend = "tensorrt-rtx"
        else:
            raise UsageError("no TensorRT backend found: install one of\n  " + "\n  ".join(INSTALL_HINT.values()))
    return backend_of(backend).resolve(spec, caps)


def builds_same_compute_capability() -> bool:
    """Whether the installed full TensorRT offers HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY: a plan
    built with it runs on every GPU of the builder's compute capability (A10, A40 and RTX 3090 are all
    sm_86). Found without importing TensorRT: the name is in its compiled bindings. When it cannot be
    found the plan is keyed by GPU model, which shares less but never hands a plan to a GPU it fails on."""
    spec = importlib.util.find_spec(backend("tensorrt").MODULE)
    if spec is None or not spec.submodule_search_locations:
        return False
    return _mentions(tuple(spec.submodule_search_locations), b"SAME_COMPUTE_CAPABILITY")


@functools.cache
def _mentions(folders: tuple[str, ...], name: bytes) -> bool:
    import mmap

    for binary in (b for folder in folders for b in Path(folder).glob("*.so*")):
        with binary.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(name) != -1:
                return True
    return False


def gpu_model_id(name: str) -> str:
    """"NVIDIA GeForce RTX 3090" -> "geforce-rtx-3090": the GPU model as it appears in a target id."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().removeprefix("nvidia")).strip("-")


def backend_of(name: str):
    """The module of backend `name` (trtbuild.backends)."""
    return backend(name)


def target_from_dict(data: dict) -> Target:
    return Target(data["backend"], data["version"], tuple(data["compute_capabilities"]), data.get("gpu_model", ""))


def supports_fp8(cc: str) -> bool:
    """fp8 tensor cores arrived with Ada (8.9); Hopper (9.0) and Blackwell (10.x, 12.x) have them too."""
    major, _, minor = cc.partition(".")
    return cc != "local" and (int(major), int(minor or 0)) >= (8, 9)


def usable_gpus(target: Target, precision: str = "fp32") -> list:
    """The local GPUs that run (and, for full TensorRT, build) engines of `precision` for `target`."""
    usable = backend_of(target.backend).usable_gpus(target, detect_gpus())
    if precision == "fp8":
        usable = [g for g in usable if supports_fp8(g.compute_capability)]
    return usable


def cannot_run_here(target: Target, precision: str = "fp32") -> str | None:
    """Why no local GPU can run engines of `precision` built for `target`; None when one can."""
    if usable_gpus(target, precision):
        return None
    need = backend_of(target.backend).needs(target)
    if precision == "fp8":
        need += " (fp8: 8.9 or newer)"
    here = ", ".join(f"{g.name} ({g.compute_capability})" for g in detect_gpus()) or "no NVIDIA GPU"
    return f"running this engine needs a GPU with compute capability {need}; this machine has {here}"


def cuda_device(target: Target, precision: str = "fp32") -> dict:
    """A step's context naming the GPU its worker uses (by UUID, for CUDA_VISIBLE_DEVICES): the one
    matching the target, not whichever CUDA makes current. Empty when no GPU is needed or found."""
    usable = usable_gpus(target, precision)
    return {"cuda_device": usable[0].uuid} if usable and usable[0].uuid else {}
