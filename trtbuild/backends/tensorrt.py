"""Full TensorRT: builds on the GPU the plan is for (a GPU server; published on NVIDIA's package index).
A plan runs on every GPU of its compute capability when this TensorRT offers same-compute-capability
builds (sm_80 and newer), else on the GPU model that built it."""

from __future__ import annotations

NAME = "tensorrt"
TITLE = "TensorRT"
MODULE = "tensorrt"
DISTRIBUTION = "tensorrt"
INSTALL_HINT = "pip install 'trtbuild[tensorrt]'  (full TensorRT, on a machine with an NVIDIA GPU)"
BUILDS_ON_GPU = True
TIMING_CACHE = True
PORTABLE_BY_DEFAULT = False  # a target naming no compute capability is this machine's GPU
TRITON_PLATFORM = "tensorrt_plan"  # Triton's TensorRT backend loads these plans itself
POLYGRAPHY_RTX = False  # POLYGRAPHY_USE_TENSORRT_RTX for Polygraphy's runners
FARM_OFFER = r"^trtbuild-build-tensorrt-(?P<version>[^-]+)-(?P<sm>sm\d+)(?:-(?P<model>.+))?$"


def resolve(spec: str, caps: tuple[str, ...]):
    from trtbuild.backends import target as t  # its functions by attribute: tests stand in for NVML there
    from trtbuild.errors import UsageError

    version = t.installed_version(NAME)
    gpus = t.detect_gpus()
    if not caps:
        if not gpus:
            missing = "" if version else f"; TensorRT is not installed either ({INSTALL_HINT})"
            return t.Target(NAME, version or "none", ("local",)), \
                f"TensorRT builds for the GPU it runs on, and this machine has no NVIDIA GPU{missing}"
        caps = (gpus[0].compute_capability,)
    need = " or ".join("sm_" + cc.replace(".", "") for cc in caps)
    if version is None:
        return t.Target(NAME, "none", caps), f"needs TensorRT and a GPU with {need}: {INSTALL_HINT}"
    if len(caps) != 1:
        raise UsageError(f"target {spec!r}: a TensorRT engine is built for one GPU architecture; list one SM per target")
    builder = next((g for g in gpus if g.compute_capability == caps[0]), None)
    if builder is None:
        here = ", ".join(f"{g.name} (sm_{g.compute_capability.replace('.', '')})" for g in gpus) or "no NVIDIA GPU"
        return t.Target(NAME, version, caps), f"needs a GPU with {need} to build (this machine has {here})"
    same_cc = t.builds_same_compute_capability() and int(caps[0].split(".")[0]) >= 8
    return t.Target(NAME, version, caps, "" if same_cc else t.gpu_model_id(builder.name)), None


def usable_gpus(target, gpus) -> list:
    from trtbuild.backends.target import gpu_model_id

    return [g for g in gpus if g.compute_capability in target.compute_capabilities
            and target.gpu_model in ("", gpu_model_id(g.name))]


def needs(target) -> str:
    return " or ".join(target.compute_capabilities) + (f" ({target.gpu_model})" if target.gpu_model else "")


def runs_on(target) -> str:
    if target.gpu_model:
        return f"{target.gpu_model} GPUs only (this TensorRT has no same-compute-capability build)"
    return f"every sm_{target.compute_capabilities[0].replace('.', '')} GPU (hardware compatibility: same compute capability)"


def configure(trt, config, target: dict) -> None:
    """Without a GPU model in the target, the plan runs on every GPU of the builder's compute capability."""
    if not target.get("gpu_model"):
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY


def plan_fit(caps, cc: str) -> int | None:
    """0 when a plan built for `caps` runs on a GPU of compute capability `cc` (its own), else None."""
    return 0 if caps == [cc] else None


def refuses(precision: str, caps: tuple[str, ...]) -> str | None:
    """Why this backend cannot build `precision` for `caps` (None: it can, as far as is known before building)."""
    return None


def run_capabilities(target) -> tuple[str, ...]:
    return target.compute_capabilities


def farm_offers(version: str | None, gpus, cores: int) -> list:
    """The targets a farm node with these GPUs builds (one per GPU, each on that GPU)."""
    from trtbuild.backends.target import Target, builds_same_compute_capability, gpu_model_id

    if not version:
        return []
    found = []
    for gpu in gpus:
        same_cc = builds_same_compute_capability() and int(gpu.compute_capability.split(".")[0]) >= 8
        found.append((Target(NAME, version, (gpu.compute_capability,), "" if same_cc else gpu_model_id(gpu.name)), 1))
    return found


def farm_build_resource(target) -> str:
    return f"build-{target.id}"


def farm_needs(target) -> str:
    gpu = f"{target.gpu_model} " if target.gpu_model else ""
    version = f"TensorRT {target.version}" if target.version != "none" else "full TensorRT"
    return f"a node with {version} and an {gpu}sm_{target.compute_capabilities[0].replace('.', '')} GPU"
