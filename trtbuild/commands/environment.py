"""What `trtbuild env` reports: GPUs, TensorRT backends, frameworks and converters, from package
metadata and NVML only (nothing heavy is imported)."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict

from trtbuild.errors import UsageError
from trtbuild.backends import backend, names as backend_names
from trtbuild.frontends.registry import framework, names as framework_names
from trtbuild.backends.gpu import detect_gpus
from trtbuild.steps import KINDS, plugin_kinds
from trtbuild.steps.action import tool_version
from trtbuild.backends.target import installed_version, resolve_target, supports_fp8

TOOLS = ("onnx", "onnxsim", "onnxruntime", "sympy", "nvidia-modelopt", "polygraphy")


def describe() -> dict:
    info = {
        "gpus": [asdict(g) for g in detect_gpus()],
        "backends": {b: installed_version(b) for b in backend_names()},
        "frameworks": {fw: _installed(framework(fw).listed) for fw in framework_names()},
        "tools": {d: tool_version(d) for d in TOOLS},
        "precisions": _precisions(),
        "step_kinds": {"built in": list(KINDS), "plug-ins": plugin_kinds()},
    }
    try:
        target, cannot = resolve_target("auto")
        info["default_target"] = target.id if cannot is None else f"none ({cannot})"
    except UsageError as exc:  # no backend at all: say so instead of failing
        info["default_target"] = f"none ({exc})"
    return info


def _installed(dists: tuple[str, ...]) -> dict[str, str]:
    """The distributions present (tensorflow-cpu, not a "not installed" tensorflow beside it), or the
    first one's name as missing."""
    found = {d: tool_version(d) for d in dists}
    present = {d: v for d, v in found.items() if v != "not installed"}
    return present or {dists[0]: "not installed"}


def _precisions() -> dict[str, str]:
    """engine.precision -> how this machine would make it, or why it cannot."""
    from trtbuild.planning.graph import fp16_converter

    found = {"fp32": "builder setting", "tf32": "builder setting (runs faster on Ampere and newer)"}
    for precision in ("fp16", "bf16"):
        try:
            found[precision] = fp16_converter(precision)
        except UsageError as exc:
            found[precision] = f"unavailable: {exc}"
    # Without sympy, ONNX Runtime's symbolic shape inference is skipped before quantizing (a warning).
    partial = "" if importlib.util.find_spec("sympy") else ", without symbolic shape inference (pip install sympy)"
    found["int8"] = "ort-quantization" + partial
    found["fp8"] = f"ort-quantization{partial} (engines for sm_89 and newer)"
    return found


def render(info: dict) -> str:
    lines = ["GPUs:"]
    for g in info["gpus"]:
        fp8 = "  fp8" if supports_fp8(g["compute_capability"]) else ""
        lines.append(f"  {g['index']}: {g['name']}  sm_{g['compute_capability'].replace('.', '')}  "
                     f"{g['memory_bytes'] / 2**30:.1f} GiB  driver {g['driver']}{fp8}")
    if not info["gpus"]:
        lines.append("  none (no NVIDIA driver or GPU): TensorRT-RTX can still build plans; none can run here")
    lines.append("Backends:")
    for name, version in info["backends"].items():
        lines.append(f"  {name:<14} {version or 'not installed: ' + backend(name).INSTALL_HINT}")
    lines.append("Frameworks:")
    for fw, dists in info["frameworks"].items():
        found = ", ".join(f"{d} {v}" for d, v in dists.items() if v != "not installed") or "not installed"
        lines.append(f"  {fw:<14} {found}")
        lines += [f"  {'':<14} {line.split(': ', 1)[1]}" for line in framework(fw).too_old()]
    lines.append("Tools:")
    lines.append("  " + ", ".join(f"{d} {v}" for d, v in info["tools"].items()))
    lines.append("Precisions:")
    lines += [f"  {p:<6} {how}" for p, how in info["precisions"].items()]
    lines.append("Step kinds:")
    lines.append("  built in: " + ", ".join(info["step_kinds"]["built in"]))
    plugins = info["step_kinds"]["plug-ins"]
    lines.append("  plug-ins: " + (", ".join(f"{k} ({m})" for k, m in plugins.items()) or "none (a module "
                                   "trtbuild_step_NAME on the Python path is the step kind NAME)"))
    lines.append(f"Default target: {info['default_target']}")
    return "\n".join(lines)
