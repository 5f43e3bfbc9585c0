"""What the nodes of a build farm offer, as Ray custom resources, and how steps are routed to them.

A node advertises (`trtbuild ray-node` prints the `ray start` options):
  trtbuild-build-tensorrt-rtx-<version>            it builds TensorRT-RTX engines (any compute capability)
  trtbuild-build-tensorrt-<version>-sm<XX>[-<gpu>]  it builds full TensorRT engines for that GPU
  trtbuild-gpu-sm<XX>                               it has GPUs of that compute capability, to run engines
  trtbuild-code-<digest>                            the code version of its trtbuild (steps.action.toolchain)
CPU steps (export, simplify, calibration) go to any node running the driver's trtbuild; when no node
offers a code resource (nodes started by hand), to any node, whose worker then checks each step's
code and tools before running it. No Ray import here: planning stays light.
"""

from __future__ import annotations

import json
import os
import re

from trtbuild.errors import UsageError
from trtbuild.backends.gpu import detect_gpus
from trtbuild.backends.target import (RTX_COMPUTE_CAPABILITIES, TARGET_PATTERN, Target, builds_same_compute_capability,
                                      compute_capabilities, gpu_model_id, installed_version, resolve_target, sm_to_cc,
                                      supports_fp8)

PREFIX = "trtbuild-"
CODE = f"{PREFIX}code-"
_FULL = re.compile(r"^trtbuild-build-tensorrt-(?P<version>[^-]+)-(?P<sm>sm\d+)(?:-(?P<model>.+))?$")
_RTX = re.compile(r"^trtbuild-build-tensorrt-rtx-(?P<version>.+)$")


def build_resource(target: Target) -> str:
    if target.backend == "tensorrt-rtx":
        return f"{PREFIX}build-tensorrt-rtx-{target.version}"
    return f"{PREFIX}build-{target.id}"


def gpu_resource(cc: str) -> str:
    return f"{PREFIX}gpu-sm{cc.replace('.', '')}"


def code_resource(toolchain: str) -> str:
    return f"{CODE}{toolchain}"


def this_node() -> dict[str, float]:
    """The resources this machine offers a farm, from its installed backends and NVML."""
    from trtbuild.steps.action import toolchain

    offers: dict[str, float] = {code_resource(toolchain()): 1000.0}  # any number of steps at once
    rtx = installed_version("tensorrt-rtx")
    if rtx:
        offers[f"{PREFIX}build-tensorrt-rtx-{rtx}"] = float(os.cpu_count() or 1)
    full = installed_version("tensorrt")
    for gpu in detect_gpus():
        offers[gpu_resource(gpu.compute_capability)] = offers.get(gpu_resource(gpu.compute_capability), 0) + 1
        if full:
            same_cc = builds_same_compute_capability() and int(gpu.compute_capability.split(".")[0]) >= 8
            target = Target("tensorrt", full, (gpu.compute_capability,), "" if same_cc else gpu_model_id(gpu.name))
            offers[build_resource(target)] = offers.get(build_resource(target), 0) + 1
    return offers


def ray_start_options(offers: dict[str, float]) -> str:
    return f"--resources='{json.dumps(offers, sort_keys=True)}'"


class FarmMachine:
    """Target resolution and routing for a cluster: the compile-time counterpart of
    trtbuild.planning.graph.ThisMachine. `offered`: resource name -> the most any one alive node has."""

    def __init__(self, offered: dict[str, float]):
        self.offered = offered

    def resolve(self, spec: str) -> tuple[Target, str | None]:
        """The Target the cluster builds for `spec`. Never a skip: a target no node offers fails its
        engine step within seconds (trtbuild.execution.farm_executor), naming what it needs."""
        if not re.match(TARGET_PATTERN, spec):
            raise UsageError(f"target {spec!r}: expected tensorrt-rtx[:portable|:smXX+...] or tensorrt:smXX")
        backend, _, arch = spec.partition(":")
        caps = compute_capabilities(arch)
        if backend == "auto":
            backend = "tensorrt-rtx" if self._versions(_RTX) or installed_version("tensorrt-rtx") else "tensorrt"
        if backend == "tensorrt-rtx":
            unknown = [cc for cc in caps if cc not in RTX_COMPUTE_CAPABILITIES]
            if unknown or installed_version("tensorrt-rtx"):  # the local install names the version
                return resolve_target(spec.replace("auto", backend, 1))
            return Target(backend, self._pick(self._versions(_RTX)), caps), None
        if len(caps) != 1:
            raise UsageError(f"target {spec!r}: with --executor ray a full TensorRT target names one GPU "
                             "architecture, such as tensorrt:sm86")
        sm = arch
        offers = [m for m in (_FULL.match(name) for name in self.offered) if m and m["sm"] == sm]
        version = self._pick([m["version"] for m in offers], installed_version("tensorrt"))
        models = sorted(m["model"] or "" for m in offers if m["version"] == version)
        return Target(backend, version, caps, models[0] if models else ""), None

    @staticmethod
    def builder(target: Target) -> dict:
        return {}  # Ray hands the task its GPU (CUDA_VISIBLE_DEVICES)

    def code_need(self) -> dict[str, float]:
        """The driver's code resource when some node offers code resources; else nothing."""
        from trtbuild.steps.action import toolchain

        if not any(name.startswith(CODE) for name in self.offered):
            return {}
        return {code_resource(toolchain()): 0.001}

    def other_code(self) -> list[str]:
        return sorted(name.removeprefix(CODE) for name in self.offered if name.startswith(CODE))

    def runner(self, target: Target, precision: str) -> tuple[dict, str | None]:
        if self.run_resource(target, precision):
            return {}, None
        need = " or ".join(self._run_caps(target)) or "8.x or 12.x"
        return {}, f"no node of the cluster has a GPU with compute capability {need} to run this engine"

    def run_resource(self, target: Target, precision: str = "fp32") -> str | None:
        """The GPU resource a verify step of `target` asks for; None when no node offers one."""
        for name in sorted(self.offered):
            cc = name.removeprefix(f"{PREFIX}gpu-sm")
            if name.startswith(f"{PREFIX}gpu-sm") and sm_to_cc("sm" + cc) in self._run_caps(target):
                if precision != "fp8" or supports_fp8(sm_to_cc("sm" + cc)):
                    return name
        return None

    @staticmethod
    def _run_caps(target: Target) -> tuple[str, ...]:
        if target.compute_capabilities or target.backend == "tensorrt":
            return target.compute_capabilities
        return tuple(cc for cc in RTX_COMPUTE_CAPABILITIES if cc.split(".")[0] in ("8", "12"))  # portable plans

    def _versions(self, pattern: re.Pattern) -> list[str]:
        return [m["version"] for m in (pattern.match(name) for name in self.offered) if m]

    @staticmethod
    def _pick(versions: list[str], preferred: str | None = None) -> str:
        """The local version when the cluster has it, else the newest offered; "none" when none is."""
        if preferred in versions:
            return preferred
        numeric = [tuple(int(p) if p.isdigit() else 0 for p in v.split(".")) for v in versions]
        return max(zip(numeric, versions))[1] if versions else "none"


def needs(target: Target | None, step_kind: str, machine: FarmMachine, precision: str) -> tuple[dict[str, float], int]:
    """The Ray custom resources and GPU count a step asks for."""
    code = machine.code_need()
    if target is None:
        return code, 0
    if step_kind == "engine":
        return code | {build_resource(target): 1}, 1 if target.backend == "tensorrt" else 0
    run = machine.run_resource(target, precision)
    return (code | {run: 1}, 1) if run else (code, 0)


def what_it_needs(target: Target, step_kind: str) -> str:
    """For a step no node can take: what a node needs to offer it."""
    if step_kind != "engine":
        return "a node with a GPU that runs this engine"
    if target.backend == "tensorrt-rtx":
        return f"a node with TensorRT-RTX {target.version} installed"
    gpu = f"{target.gpu_model} " if target.gpu_model else ""
    version = f"TensorRT {target.version}" if target.version != "none" else "full TensorRT"
    return f"a node with {version} and an {gpu}sm_{target.compute_capabilities[0].replace('.', '')} GPU"
