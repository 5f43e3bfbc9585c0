"""TensorRT-RTX: builds ahead of time on any machine, GPU or not, for the compute capabilities a target
names (none: a portable plan, 8.0 and up). Its plans run on Ampere, Ada and Blackwell GPUs, not Hopper."""

from __future__ import annotations

NAME = "tensorrt-rtx"
MODULE = "tensorrt_rtx"
DISTRIBUTION = "tensorrt-rtx"
INSTALL_HINT = "pip install 'trtbuild[rtx]'  (TensorRT-RTX builds engines even without a GPU)"
BUILDS_ON_GPU = False
TIMING_CACHE = False  # the API exists and does nothing
# Compute capabilities TensorRT-RTX can target ahead of time (ComputeCapability.SM75 ...).
COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")


def resolve(spec: str, caps: tuple[str, ...]):
    from trtbuild.backends import target as t  # its functions by attribute: tests stand in for them there
    from trtbuild.errors import UsageError

    version = t.installed_version(NAME)
    if version is None:
        raise UsageError(f"target {spec!r}: TensorRT-RTX is not installed: {INSTALL_HINT}")
    unknown = [cc for cc in caps if cc not in COMPUTE_CAPABILITIES]
    if unknown:
        raise UsageError(f"target {spec!r}: TensorRT-RTX cannot build for compute capability {', '.join(unknown)} "
                         f"(it supports {', '.join(COMPUTE_CAPABILITIES)})")
    return t.Target(NAME, version, caps), None


def usable_gpus(target, gpus) -> list:
    wanted = target.compute_capabilities
    return [g for g in gpus if (g.compute_capability in wanted if wanted else
                                g.compute_capability.split(".")[0] in ("8", "12"))]


def needs(target) -> str:
    return " or ".join(target.compute_capabilities) if target.compute_capabilities else "8.x or 12.x"


def runs_on(target) -> str:
    return "GPUs of the target's compute capabilities" if target.compute_capabilities else "portable"


def configure(trt, config, target: dict) -> None:
    """The compute capabilities the plan is built for; none set: a portable plan."""
    caps = target["compute_capabilities"]
    if caps:
        config.num_compute_capabilities = len(caps)
        for i, cc in enumerate(caps):
            config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")), i)
