"""Frameworks, one descriptor each: what planning, keys, the schema and `trtbuild env` know of a framework.

A framework's code is a module with load(spec), export(model, spec, out_path) -> metadata and
predict(model, spec, feeds) (trtbuild.frontends); its facts are one `Framework`. The built-in ones are
in BUILT_IN. Any other NAME is the module `trtbuild_framework_<NAME with - as _>` wherever Python finds
it (worker processes find it on the same path), which defines `FRAMEWORK = Framework(...)` beside its
load / export / predict; or one `register(Framework(...))` names (from Python: trtbuild.execution.registered
carries it to the workers).

Nothing here imports a framework: a missing one is found with importlib.util.find_spec.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from types import ModuleType

from trtbuild.errors import UsageError

CONVENTION = "trtbuild_framework_"
ONNX = "onnx"  # an ONNX file: no framework, no export step


@dataclass(frozen=True)
class Framework:
    """What trtbuild needs to know of a framework, besides its module's load / export / predict."""

    name: str  # source.framework in a recipe
    module: str  # the module with load / export / predict
    requirements: tuple[str, ...] = ()  # modules that must import for an export
    extra: str | None = None  # trtbuild's extra that installs them (pip install 'trtbuild[EXTRA]')
    tools: tuple[str, ...] = ("onnx", "numpy")  # distributions whose versions go into the export's key
    preload: tuple[str, ...] = ()  # installed modules an export imports before the user's code is watched
    default_opset: int = 17  # the opset its exporter writes when the recipe sets none
    env: tuple[str, ...] = ()  # prefixes of the environment variables its exporter reads (keyed)
    distributions: tuple[str, ...] = ()  # what `trtbuild env` lists (default: the tools' first)
    model_folder: bool = False  # source.path may be a directory (a SavedModel)
    input_dtype: str | None = None  # inputs' dtype when the recipe sets none (None: the model's own)
    exporters: tuple[str, ...] = ()  # the choices of source.exporter, when it has more than one exporter
    weights_only: bool = False  # new weights can go into the last exported graph (steps.reweight)
    traced_at_opt: bool = False  # an export may fix dims at the opt shapes (a trace), said when a shape fails
    oldest: tuple[tuple[str, str], ...] = ()  # (distribution, the oldest version trtbuild is tested with)

    @property
    def install_hint(self) -> str:
        return f"pip install 'trtbuild[{self.extra}]'" if self.extra else f"pip install {' '.join(self.requirements)}"

    @property
    def listed(self) -> tuple[str, ...]:
        return self.distributions or self.tools[:1]

    def require(self) -> None:
        """Fail early (exit 2) with the install command when the framework is missing. Nothing is imported."""
        missing = [m for m in self.requirements if importlib.util.find_spec(m) is None]
        if missing:
            raise UsageError(f"source.framework {self.name!r} needs {', '.join(missing)}, which is not installed: "
                             f"{self.install_hint}")

    def too_old(self) -> list[str]:
        """What is installed older than trtbuild supports (each a sentence): exports may fail or differ."""
        from trtbuild.store.versions import version

        found = [(dist, oldest, version(dist)) for dist, oldest in self.oldest]
        return [f"{self.name}: {dist} {v} is older than trtbuild supports ({dist} >= {oldest}); its exports may fail "
                f"or differ: pip install '{dist}>={oldest}'" for dist, oldest, v in found
                if v is not None and _release(v) < _release(oldest)]

    def load(self) -> ModuleType:
        """The module with load / export / predict (in a worker: it may import the framework)."""
        return importlib.import_module(self.module)


BUILT_IN = {f.name: f for f in (
    Framework(
        "pytorch", "trtbuild.frontends.pytorch", requirements=("torch",), extra="torch",
        tools=("torch", "onnx", "numpy"), preload=("torch", "torch.onnx"), default_opset=18,
        env=("TORCH_", "PYTORCH_"), distributions=("torch", "torchvision"), input_dtype="float32",
        exporters=("auto", "dynamo", "torchscript"), weights_only=True, traced_at_opt=True, oldest=(("torch", "2.13"),)),
    Framework(
        "tensorflow", "trtbuild.frontends.tensorflow", requirements=("tensorflow", "tf2onnx"), extra="tensorflow",
        tools=("tensorflow", "tensorflow-cpu", "tf2onnx", "onnx", "numpy", "protobuf"),
        preload=("tensorflow", "tf2onnx"), default_opset=17, env=("TF_",),
        distributions=("tensorflow", "tensorflow-cpu", "tf2onnx"), model_folder=True),
    Framework(
        "keras", "trtbuild.frontends.tensorflow", requirements=("tensorflow", "keras", "tf2onnx"), extra="tensorflow",
        tools=("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "numpy", "protobuf"),
        preload=("keras", "tf2onnx"), default_opset=17,
        env=("KERAS_BACKEND", "TF_", "TORCH_", "PYTORCH_"),  # Keras 3 runs on TensorFlow or torch
        distributions=("keras",), model_folder=True),
)}
REGISTRY: dict[str, Framework] = dict(BUILT_IN)


def _release(version: str) -> tuple[int, ...]:
    """2.11.0+cu130 -> (2, 11, 0): the release numbers a floor compares (a pre-release counts as its release)."""
    import re

    return tuple(int(n) for n in re.findall(r"\d+", version.split("+")[0])[:3])


def register(framework: Framework) -> None:
    """Add a framework (a build from this process carries it to its workers: trtbuild.execution.registered)."""
    if framework.name == ONNX:
        raise ValueError("onnx is a source without a framework: choose another name")
    REGISTRY[framework.name] = framework


def convention_module(name: str) -> str:
    return CONVENTION + name.replace("-", "_")


def find(name: str) -> Framework | None:
    """The framework called `name`, or None. A convention module is imported for its FRAMEWORK."""
    if name in REGISTRY:
        return REGISTRY[name]
    module = convention_module(name)
    if not name or not name.replace("-", "_").isidentifier() or importlib.util.find_spec(module) is None:
        return None
    found = getattr(_imported(module), "FRAMEWORK", None)
    if not isinstance(found, Framework):
        raise UsageError(f"framework module {module} must define FRAMEWORK = Framework({name!r}, ...) "
                         "(from trtbuild.frontends.registry import Framework)")
    if found.name != name:  # "numpy_mlp" for "numpy-mlp": the choices name it as it is spelled
        return None
    return REGISTRY.setdefault(name, found)


def _imported(module: str) -> ModuleType:
    if module in sys.modules:
        return sys.modules[module]
    try:
        return importlib.import_module(module)
    except Exception as exc:  # the plugin's own error, said in one line
        raise UsageError(f"framework module {module} does not import: {type(exc).__name__}: {exc}") from None


def framework(name: str) -> Framework:
    """The framework called `name`; UsageError naming the choices when there is none."""
    found = find(name)
    if found is None:
        raise UsageError(f"unknown framework {name!r}: {choices_text()}")
    return found


def names() -> list[str]:
    """Every framework: the registered ones, then those found on the path by the convention (imported, for
    their names)."""
    import pkgutil  # only when the names are listed: a build asks for one framework by name

    for module in sorted(m.name for m in pkgutil.iter_modules() if m.name.startswith(CONVENTION)):
        try:
            found = getattr(_imported(module), "FRAMEWORK", None)
        except UsageError:  # listed without it; naming it says why it does not import
            continue
        if isinstance(found, Framework):
            REGISTRY.setdefault(found.name, found)
    return list(REGISTRY)


def choices_text() -> str:
    return (f"the frameworks are {', '.join([ONNX, *names()])} (a framework NAME is a module "
            f"{CONVENTION}NAME on Python's path, with - as _)")
