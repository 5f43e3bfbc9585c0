"""What an action is made of besides its parameters and input files: the code of its step kind, the
versions of the tools it calls and the environment variables it reads. The planner puts them in the
key; whoever runs the step (a local worker, a farm node) computes them again from what it sees and
refuses to run on a difference, so no result is ever stored under a key it did not compute.

Environment: a worker gets the variables in PASS_THROUGH (where files are, which GPU, locale: they
do not change what a step makes) and, for each step, the variables its kind declares in READS.env,
whose values are in its key. Every other variable never reaches a step.
"""

from __future__ import annotations

import functools
import os

from trtbuild.store import versions
from trtbuild.store.code import code_digest, package_code, raw_digests, verified_code

PASS_THROUGH = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "LANG", "LANGUAGE", "TMPDIR", "TEMP", "TMP",
    "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONUNBUFFERED", "PYTHONIOENCODING",
    "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_MODULE_LOADING",
    "CUDA_CACHE_PATH", "CUDA_CACHE_MAXSIZE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME", "KERAS_HOME",
    "XDG_CACHE_HOME", "TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL",
    "ORT_DISABLE_TELEMETRY",  # trtbuild sets it: ONNX Runtime's telemetry files stay out of /tmp
    "TRTBUILD_OBSERVE",  # how reads are observed (trtbuild.store.discovered), not what a step makes
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
})
# Logging and debugging switches: they change what is printed, never an artifact, so they reach the
# steps (a user debugging an export sees the logs) without being keyed.
LOGGING = frozenset({
    "TORCH_LOGS", "TORCH_LOGS_OUT", "TORCH_LOGS_FORMAT", "TORCH_TRACE", "TORCH_SHOW_CPP_STACKTRACES",
    "TORCH_CPP_LOG_LEVEL", "TORCH_SHOW_DISPATCH_TRACE", "TORCH_DISTRIBUTED_DEBUG", "TORCH_COMPILE_DEBUG",
    "TORCHDYNAMO_VERBOSE", "PYTORCH_JIT_LOG_LEVEL",
    "TF_CPP_VMODULE", "TF_CPP_MIN_VLOG_LEVEL", "TF_CPP_LOG_THREAD_ID", "TF_ENABLE_DEPRECATION_WARNINGS",
})
PASS_PREFIXES = ("LC_",)
# Other tools' variables under a prefix a step reads (Terraform shares TensorFlow's TF_): they never
# reach a step, so a build machine's Terraform settings do not change its keys.
NOT_READ = ("TF_VAR_", "TF_CLI_", "TF_LOG", "TF_TOKEN_", "TF_DATA_DIR", "TF_WORKSPACE", "TF_IN_AUTOMATION", "TF_INPUT",
            "TF_PLUGIN_CACHE_DIR", "TF_REGISTRY_", "TF_APPEND_USER_AGENT", "TF_IGNORE", "TF_STATE_PERSIST_INTERVAL")


def passes(name: str) -> bool:
    return name in PASS_THROUGH or name in LOGGING or name.startswith(PASS_PREFIXES)


def keyed_env(declared: tuple[str, ...], environ=os.environ) -> dict[str, str]:
    """The variables a step reads (names, or prefixes ending in '_'), as this process sees them."""
    if not declared:  # most kinds: no value is looked up (a no-op build asks once per step)
        return {}
    exact = {d for d in declared if not d.endswith("_")}
    prefixes = tuple(d for d in declared if d.endswith("_"))
    names = sorted(n for n in environ
                   if (n in exact or n.startswith(prefixes)) and not passes(n) and not n.startswith(NOT_READ))
    return {name: environ[name] for name in names}


def worker_environment(declared: tuple[str, ...], environ=os.environ) -> dict[str, str]:
    """A worker process's environment: what passes through, plus what any kind reads (each step then
    keeps only its own kind's, see `step_environment`)."""
    return {n: v for n, v in environ.items() if passes(n)} | keyed_env(declared, environ)


def step_environment(keyed: dict[str, str]) -> None:
    """This process's environment for one step: what passes through, plus the step's keyed values."""
    for name in [n for n in os.environ if not passes(n) and n not in keyed]:
        del os.environ[name]
    os.environ.update(keyed)


@functools.cache
def code_modules(kind: str) -> dict[str, str]:
    """{module: digest} of the code that makes a step kind's artifacts: its module and every trtbuild
    module it imports or loads by name, transitively (not the registry, which names every kind)."""
    return _kind_code(kind, package_code)


@functools.cache
def code_version(kind: str) -> str:
    """Editing what a step kind runs (not its comments or docstrings) changes the step's key, so what
    older code made is never served as what newer code makes."""
    from trtbuild import __version__

    return code_digest({"__version__": __version__, **code_modules(kind)})


@functools.cache
def verified_version(kind: str) -> str:
    """code_version from the files themselves, parsed now: what a worker whose code differs from the
    key's bytes checks, whatever any kept index says."""
    from trtbuild import __version__

    return code_digest({"__version__": __version__, **_kind_code(kind, verified_code)})


def _kind_code(kind: str, walk) -> dict[str, str]:
    """{module: digest} of a kind's code by `walk` (package_code or verified_code); a plug-in kind outside
    trtbuild: its own module's syntax tree and the trtbuild modules it imports."""
    from trtbuild.steps import module_name

    module = module_name(kind)
    if module.startswith("trtbuild."):
        return walk(module, registries=("trtbuild.steps",))
    import importlib.util
    from pathlib import Path

    from trtbuild.store.code import module_path, source_facts

    file = Path(importlib.util.find_spec(module).origin)
    facts = source_facts(file.read_bytes(), str(file))
    found = {module: facts["digest"]}
    for name, level in facts["imports"]:
        if level == 0 and name.startswith("trtbuild.") and module_path(name).exists():
            found |= walk(name, registries=("trtbuild.steps",))
    return found


def toolchain() -> str:
    """One digest of every step kind's code version: what a farm node offers (trtbuild.execution.farm)
    so that steps go to nodes that run the same trtbuild as the driver."""
    from trtbuild.steps import KINDS

    return code_digest({kind: code_version(kind) for kind in sorted(KINDS)})


@functools.cache
def tool_version(dist: str) -> str:
    found = versions.version(dist)
    return "not installed" if found is None else found


def expectations(kind: str, components: dict) -> dict:
    """What a worker checks before running a step: the key's code version and tools, and the bytes of
    the modules they came from (equal bytes spare the worker a parse)."""
    return {"version": components["version"], "tools": components["tools"],
            "code": raw_digests(code_modules(kind))}


def differences(kind: str, expected: dict) -> list[str]:
    """How the action this process would run differs from the one its key describes."""
    found = []
    if raw_digests(expected["code"]) != expected["code"] and verified_version(kind) != expected["version"]:
        mine = code_modules(kind)
        theirs = set(expected["code"])
        edited = sorted(m for m in theirs | set(mine) if (m in mine) != (m in theirs)
                        or raw_digests([m])[m] != expected["code"].get(m))
        found.append(f"trtbuild's code of the {kind} step ({', '.join(edited[:3])}): code version "
                     f"{verified_version(kind)} here, {expected['version']} in the key")
    for dist, version in sorted(expected["tools"].items()):
        if tool_version(dist) != version:
            found.append(f"{dist} {tool_version(dist)} here, {version} in the key")
    return found
