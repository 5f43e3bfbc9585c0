"""The schema's choices that come from registries: source.framework and engine.backend accept every
registered name and every module found by its convention, and an unknown name's error lists them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, StrictStr

from trtbuild.errors import UsageError
from trtbuild.backends import REGISTRY as BACKENDS, choices_text as backend_choices, module_name as backend_module_name
from trtbuild.frontends.registry import BUILT_IN, ONNX, choices_text as framework_choices, find as find_framework


@dataclass(frozen=True)
class Registered:
    """A registry's names: the built-in ones, which the recipe keys page lists, and any plugin's NAME."""

    built_in: tuple[str, ...]


def _known_framework(name: str) -> str:
    try:
        found = name == ONNX or find_framework(name) is not None
    except UsageError as exc:  # a framework module without its descriptor
        raise ValueError(str(exc)) from None
    if not found:
        raise ValueError(f"unknown framework {name!r}: {framework_choices()}")
    return name


def _known_backend(name: str) -> str:
    if name != "auto" and backend_module_name(name) is None:
        raise ValueError(f"unknown backend {name!r}: {backend_choices()}")
    return name


# The registries' names: a framework or backend added there (or found by its module's name) is a choice too.
FrameworkName = Annotated[StrictStr, AfterValidator(_known_framework), Registered((ONNX, *BUILT_IN))]
BackendName = Annotated[StrictStr, AfterValidator(_known_backend), Registered(("auto", *BACKENDS))]
