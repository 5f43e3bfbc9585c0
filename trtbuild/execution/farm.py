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
from trtbuild.backends import REGISTRY, backend, names as backend_names
from trtbuild.backends.target import (TARGET_PATTERN, Target, compute_capabilities, installed_version, resolve_target,
                                      sm_to_cc, supports_fp8)

PREFIX = "trtbuild-"
CODE = f"{PREFIX}code-"


def build_resource(target: Target) -> str:
    return PREFIX + backend(target.backend).farm_build_resource(target)


def gpu_resource(cc: str) -> str:
    return f"{PREFIX}gpu-sm{cc.replace('.', '')}"


def code_resource(toolchain: str) -> str:
    return f"{CODE}{toolchain}"


def this_node() -> dict[str, float]:
    """The resources this machine offers a farm, from its installed backends and NVML."""
    from trtbuild.steps.action import toolchain

    offers: dict[str, float] = {code_resource(toolchain()): 1000.0}  # any number of steps at once
    gpus = detect_gpus()
    for gpu in gpus:
        offers[gpu_resource(gpu.compute_capability)] = offers.get(gpu_resource(gpu.compute_capability), 0) + 1
    for name in backend_names():  # a plugin backend too
        for target, count in backend(name).farm_offers(installed_version(name), gpus, os.cpu_count() or 1):
            offers[build_resource(target)] = offers.get(build_resource(target), 0) + float(count)
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
        name, _, arch = spec.partition(":")
        caps = compute_capabilities(arch)
        if name == "auto":  # ahead-of-time builders first, as on one machine
            ordered = sorted(REGISTRY, key=lambda n: backend(n).BUILDS_ON_GPU)
            name = next((n for n in ordered if self._versions(n) or installed_version(n)), ordered[-1])
        chosen = backend(name)
        if not chosen.BUILDS_ON_GPU:
            unknown = [cc for cc in caps if cc not in getattr(chosen, "COMPUTE_CAPABILITIES", caps)]
            if unknown or installed_version(name):  # the local install names the version
                return resolve_target(f"{name}:{arch}" if arch else name)
            return Target(name, self._pick(self._versions(name)), caps), None
        if len(caps) != 1:
            raise UsageError(f"target {spec!r}: with --executor ray a {name} target names one GPU architecture, "
                             f"such as {name}:sm86")
        offers = [m for m in self._offers(name) if m["sm"] == arch]
        version = self._pick([m["version"] for m in offers], installed_version(name))
        models = sorted(m["model"] or "" for m in offers if m["version"] == version)
        return Target(name, version, caps, models[0] if models else ""), None

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
        return backend(target.backend).run_capabilities(target)

    def _offers(self, name: str) -> list[re.Match]:
        """What the nodes offer of backend `name`: its build resources, parsed by its FARM_OFFER pattern."""
        pattern = re.compile(backend(name).FARM_OFFER)
        return [m for m in (pattern.match(offered) for offered in self.offered) if m]

    def _versions(self, name: str) -> list[str]:
        return [m["version"] for m in self._offers(name)]

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
        return code | {build_resource(target): 1}, 1 if backend(target.backend).BUILDS_ON_GPU else 0
    run = machine.run_resource(target, precision)
    return (code | {run: 1}, 1) if run else (code, 0)


def what_it_needs(target: Target, step_kind: str) -> str:
    """For a step no node can take: what a node needs to offer it."""
    if step_kind != "engine":
        return "a node with a GPU that runs this engine"
    return backend(target.backend).farm_needs(target)
