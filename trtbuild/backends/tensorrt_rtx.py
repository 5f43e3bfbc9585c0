"""TensorRT-RTX: builds ahead of time on any machine, GPU or not, for the compute capabilities a target
names (none: a portable plan, 8.0 and up). Its plans run on Ampere, Ada and Blackwell GPUs, not Hopper."""

from __future__ import annotations

NAME = "tensorrt-rtx"
TITLE = "TensorRT-RTX"
MODULE = "tensorrt_rtx"
DISTRIBUTION = "tensorrt-rtx"
INSTALL_HINT = "pip install 'trtbuild[rtx]'  (TensorRT-RTX builds engines even without a GPU)"
BUILDS_ON_GPU = False
TIMING_CACHE = False  # the API exists and does nothing
PORTABLE_BY_DEFAULT = True  # a target naming no compute capability is a portable plan
PRELOAD = True  # importing it touches no GPU: a worker may load it before its engine step comes
TRITON_PLATFORM = "python"  # Triton's TensorRT backend is full TensorRT: a Python-backend model runs these
POLYGRAPHY_RTX = True
FARM_OFFER = r"^trtbuild-build-tensorrt-rtx-(?P<version>.+)$"
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


def plan_fit(caps, cc: str) -> int | None:
    """1 when a plan built for `caps` runs on compute capability `cc`, 2 for a portable plan there (8.x, 12.x:
    not Hopper), None when it does not run there."""
    if caps == "portable":
        return 2 if cc.split(".")[0] in ("8", "12") else None
    return 1 if cc in caps else None


def refuses(precision: str, caps: tuple[str, ...]) -> str | None:
    """TensorRT-RTX compiles no fp32 matrix multiply for Turing (sm_75: "FP32 GEMM is not supported"), and an
    int8 model keeps the layers it does not quantize (a classifier head, precision.keep_fp32) in fp32."""
    if precision == "int8" and "7.5" in caps:
        return ("TensorRT-RTX compiles no fp32 matrix multiply (Gemm, MatMul) for Turing, and an int8 model keeps "
                "the layers it does not quantize in fp32; build int8 for sm80 or newer targets, and fp16 for sm75")
    return None


def run_capabilities(target) -> tuple[str, ...]:
    """Where its plans run: the target's compute capabilities, or for a portable plan every 8.x and 12.x."""
    return target.compute_capabilities or tuple(cc for cc in COMPUTE_CAPABILITIES if cc.split(".")[0] in ("8", "12"))


def farm_offers(version: str | None, gpus, cores: int) -> list:
    """What a farm node builds: any target of this version, as many at once as it has cores."""
    from trtbuild.backends.target import Target

    return [(Target(NAME, version, ()), cores)] if version else []


def farm_build_resource(target) -> str:
    return f"build-tensorrt-rtx-{target.version}"


def farm_needs(target) -> str:
    return f"a node with TensorRT-RTX {target.version} installed"
