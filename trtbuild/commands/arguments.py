"""Argument types of the command line: each turns a string into a value or says, as argparse shows
it, what was expected."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number, 1 or more")
    return value


def index(text: str) -> int:
    """A GPU index: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a GPU index, 0 or more")
    return value


def step_kinds() -> list[str]:
    from trtbuild.steps import KINDS

    return list(KINDS)


def step_kind(text: str) -> str:
    """A step kind: a built-in one, or a plug-in kind Python finds (the module trtbuild_step_NAME)."""
    from trtbuild.steps import module_name

    if module_name(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r}: no such step kind; the built-in kinds are {', '.join(step_kinds())} "
                                         f"(a plug-in kind NAME is a module trtbuild_step_NAME on the Python path)")
    return text


def forced_kind(text: str) -> str:
    """What --force runs again: "all", or one step kind."""
    return text if text == "all" else step_kind(text)


def positive_seconds(text: str) -> float:
    from trtbuild.recipes.limits import MAX_STEP_TIMEOUT

    try:
        value = float(text)
    except ValueError:
        value = 0
    if not 0 < value <= MAX_STEP_TIMEOUT:  # NaN and inf too: a timer cannot wait that long
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of seconds, at most {MAX_STEP_TIMEOUT}")
    return value


def backend_name(text: str) -> str:
    """--backend: auto or a backend's NAME (registered, or a module found by the convention)."""
    from trtbuild.backends import choices_text, module_name

    if text != "auto" and module_name(text) is None:
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}: {choices_text()}; auto picks one")
    return text


def target_spec(text: str) -> str:
    import re

    from trtbuild.backends.target import TARGET_PATTERN

    if not re.match(TARGET_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected BACKEND[:ARCH], e.g. tensorrt-rtx:sm86+sm120 or tensorrt:sm90")
    return text


def byte_size(text: str) -> int:
    """"50GiB", "500MB" or bytes, as recipes write sizes."""
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise ValueError(f"--max-size {text!r}: expected a size such as 50GiB or 500MB") from None


def remote_seconds(text: str) -> float:
    """--remote-timeout: seconds, more than 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds, more than 0 and at most 3600")
    return value
