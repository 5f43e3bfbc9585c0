"""Checks of the paths and globs a recipe names, made on every load before anything opens them.

A path must be non-empty, free of NUL bytes, resolvable (no link loop, names within the filesystem's
limits) and of the kind expected: a regular file, or a directory where one is expected. A FIFO,
a device or a socket is refused: reading one blocks or never ends. Globs are relative to the recipe
and must match at least one regular file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
from pathlib import Path

from trtbuild.recipes.reading import kind_of

FILE, DIRECTORY, FILE_OR_DIRECTORY = "a file", "a directory", "a file or a directory"

_resolved: dict[str, Path] | None = None  # while recipes compile (resolving_once): path -> its real path


@contextlib.contextmanager
def resolving_once():
    """While recipes compile, each path is resolved once (a thousand recipes naming one model resolve it
    once, not a thousand times: a stat per path component each)."""
    global _resolved
    _resolved = {}
    try:
        yield
    finally:
        _resolved = None


def real_path(path: Path) -> Path:
    """path.resolve(), remembered while recipes compile."""
    if _resolved is None:
        return path.resolve()
    name = str(path)
    found = _resolved.get(name)
    if found is None:
        found = _resolved[name] = path.resolve()
    return found


def real_path_in(folder: str, relative: str) -> Path:
    """(folder / relative).resolve(), remembered by the joined name while recipes compile: a thousand
    recipes naming one model make no Path of it each."""
    if _resolved is None:
        return Path(folder, relative).resolve()
    name = os.path.join(folder, relative)
    found = _resolved.get(name)
    if found is None:
        found = _resolved[name] = Path(name).resolve()
    return found


def path_problem(base: Path, value: str, expect: str = FILE) -> str | None:
    """What is wrong with `value` (relative to `base`) as `expect`, or None."""
    if not value:
        return "empty path: name a file relative to the recipe"
    if "\0" in value:
        return "the path contains a NUL byte"
    # A string: every load checks every path its recipe names ("x/" as pathlib reads it: "x").
    path = os.path.join(base, value) if not value.endswith("/") else base / value
    try:
        st = os.stat(path)  # follows links, as opening it would
        mode = st.st_mode
    except FileNotFoundError:
        return f"no such file: {_shown(path)}"
    except (OSError, ValueError) as exc:  # a link loop, a name too long, no permission
        return f"cannot use {value!r}: {getattr(exc, 'strerror', None) or exc}"
    if stat.S_ISREG(mode) and expect != DIRECTORY:
        if st.st_dev in _kernel_devices():  # "regular" files the kernel makes up (/proc/self/mem)
            return f"{_shown(path)} is a kernel file ({os.path.realpath(path)}); expected {expect}"
        return None
    if stat.S_ISDIR(mode) and expect != FILE:
        return None
    return f"{_shown(path)} is {kind_of(mode)}; expected {expect}"


@functools.cache
def _kernel_devices() -> frozenset[int]:
    """The devices of /proc and /sys, whose files are not data."""
    found = set()
    for folder in ("/proc", "/sys"):
        with contextlib.suppress(OSError):
            found.add(os.stat(folder).st_dev)
    with contextlib.suppress(OSError):
        found.discard(os.stat("/").st_dev)  # a folder not mounted (a bare container) is not the kernel's
    return frozenset(found)


def glob_problem(base: Path, pattern: str) -> str | None:
    """What is wrong with glob `pattern` (relative to `base`), or None when it matches a regular file."""
    if not pattern:
        return "empty glob: name files relative to the recipe, e.g. 'calib/*.npy'"
    if "\0" in pattern:
        return "the glob contains a NUL byte"
    if os.path.isabs(pattern):
        return f"{pattern!r}: globs are relative to the recipe; write the path from the recipe's folder"
    try:
        if not glob_files(base, pattern):
            return f"{pattern!r} matches no file under {_shown(base)}"
    except (OSError, ValueError, NotImplementedError) as exc:  # an unreadable folder, a pattern glob refuses
        return f"{pattern!r}: {getattr(exc, 'strerror', None) or exc}"
    return None


def glob_files(base: Path, pattern: str) -> list[Path]:
    """The regular files `pattern` matches under `base` (FIFOs, devices, sockets and folders left out)."""
    return [p for p in base.glob(pattern) if _regular(p)]


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _shown(path: Path | str) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):  # a link loop
        return str(path)
