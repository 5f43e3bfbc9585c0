"""The files a source model is made of, found without importing heavy libraries on a no-op run."""

from __future__ import annotations

import functools
import mmap
import os
import stat
from pathlib import Path

from trtbuild.errors import RecipeError, UsageError
from trtbuild.recipes.paths import glob_files as regular_matches, glob_problem, real_path
from trtbuild.recipes.reading import kind_of
from trtbuild.models.onnx_io import tensors
from trtbuild.store.hashing import StatCache


def onnx_files(model: Path, stat_cache: StatCache, where: str = "", outside: bool = False) -> list[Path]:
    """The model plus the external-data files it references (remembered per model file version). Each
    must be a regular file and, unless `outside` (source.allow_outside_files), inside the model's folder
    once links are followed: a model's data never brings in a file from elsewhere (a link to /etc, to
    another user's folder) or blocks (a FIFO). `where`: the recipe's file:line of source.path."""
    relative = stat_cache.memo(model, "onnx_external_data", _external_data_locations)
    if not relative:  # most models: no external data, no folder to resolve
        return [model]
    folder = real_path(model.parent)
    files = [model]
    for name in relative:
        if name.startswith(_BAD_NUMBER):
            raise RecipeError([f"{where}: source.path: {model}: {name[len(_BAD_NUMBER):]} is not a whole number of bytes: "
                               "re-save the model with onnx.save(..., save_as_external_data=True)"])
        path = model.parent / name
        problem = _external_data_problem(path, None if outside else folder)
        if problem:
            raise RecipeError([f"{where}: source.path: {model}: external data {name!r} {problem}"])
        files.append(path)
    return files


_BAD_NUMBER = "\0bad number\0"  # a location that names no file: an offset or length that is not a number


def _external_data_problem(path: Path, folder: Path | None) -> str | None:
    if "\0" in str(path):
        return "has a NUL byte in its name"
    try:
        real = path.resolve(strict=True)
        mode = real.stat().st_mode
    except FileNotFoundError:
        return f"is missing (expected {path})"
    except (OSError, RuntimeError) as exc:  # a link loop, a name too long
        return f"cannot be read: {getattr(exc, 'strerror', None) or exc}"
    if folder is not None and not real.is_relative_to(folder):
        return (f"resolves to {real}, outside the model's folder {folder}: copy the file next to the model, or set "
                "source.allow_outside_files: true")
    if not stat.S_ISREG(mode):
        return f"is {kind_of(mode)}, not a file"
    return None


def _external_data_locations(model: Path) -> list[str]:
    if not _mentions(model, b"location"):  # the key every external tensor names its file under
        return []  # no external data, found without importing onnx (0.1 s)
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # not ONNX (DecodeError, ValueError, a graph nested past protobuf's limit): check reports it
        return []
    locations = set()
    for tensor in tensors(proto.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            locations.add(entries.get("location", ""))  # none: the folder itself, refused as not a file
            for key in ("offset", "length"):
                if entries.get(key) and not (entries[key].isascii() and entries[key].isdigit()):
                    locations.add(f"{_BAD_NUMBER}tensor {tensor.name[:80]!r}: external data {key} {entries[key][:40]!r}")
    return sorted(locations)


def _mentions(path: Path, text: bytes) -> bool:
    with open(path, "rb") as f:
        if not os.fstat(f.fileno()).st_size:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:  # a 2 GB model is not read into memory
            return view.find(text) != -1


def tree_files(path: Path, where: str = "", outside: bool = False) -> list[Path]:
    """A file, or every file under a directory (a SavedModel), in a stable order. In a directory, a link to
    a file outside it is refused unless `outside` (source.allow_outside_files), and so is anything that is
    neither a file nor a directory (a FIFO would block the reader). `where`: the recipe's file:line."""
    if path.is_file():
        return [path]
    folder = path.resolve()
    files = []
    for entry in sorted(path.rglob("*")):
        try:
            real = entry.resolve(strict=True)
            mode = real.stat().st_mode
        except (OSError, RuntimeError) as exc:  # a dangling link, a loop
            raise RecipeError([f"{where}: source.path: {entry} cannot be read: "
                               f"{getattr(exc, 'strerror', None) or exc}"]) from None
        if not outside and not real.is_relative_to(folder):
            raise RecipeError([f"{where}: source.path: {entry} resolves to {real}, outside the model's folder "
                               f"{folder}: copy it there, or set source.allow_outside_files: true"])
        if stat.S_ISREG(mode):
            files.append(entry)
        elif not stat.S_ISDIR(mode):
            raise RecipeError([f"{where}: source.path: {entry} is {kind_of(mode)}, not a file"])
    return files


def glob_files(base: Path, patterns: list[str]) -> list[Path]:
    """The regular files the globs match under `base` (the loader has checked each matches one)."""
    files = set()
    for pattern in patterns:
        problem = glob_problem(base, pattern)
        if problem:
            raise UsageError(f"source.deps: {problem}")
        files.update(p.resolve() for p in regular_matches(base, pattern))
    return sorted(files)


def module_file(module: str, search: list[Path], key: str) -> Path:
    """The file defining `module`, found on `search` + sys.path without importing (or running) anything.

    `key` names the recipe key that asked for it, for the error message.
    """
    import sys
    from importlib.machinery import PathFinder

    paths = [str(p) for p in search] + sys.path
    parts = module.split(".")
    for depth in range(len(parts)):
        name = ".".join(parts[: depth + 1])
        spec = PathFinder.find_spec(name, paths)
        if spec is None:
            raise UsageError(f"{key}: cannot find module {name!r} (searched source.python_path and sys.path)")
        paths = list(spec.submodule_search_locations or [])
    if not spec.origin or not Path(spec.origin).is_file():
        raise UsageError(f"{key}: module {module!r} has no source file to hash")
    return Path(spec.origin).resolve()


def distribution_of(module: str, file: Path) -> str | None:
    """The installed distribution providing `module` (defined in `file`); None for the user's own code."""
    import importlib.metadata

    if not any(part in ("site-packages", "dist-packages") for part in file.parts):
        return None
    top = module.split(".")[0]
    try:
        importlib.metadata.distribution(top)  # the usual case: torchvision, timm, transformers
        return top
    except importlib.metadata.PackageNotFoundError:
        dists = _packages_distributions().get(top)  # scans every installed distribution: slow
        return dists[0] if dists else None


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict:
    import importlib.metadata

    return importlib.metadata.packages_distributions()


def user_imports(first: Path, search: list[Path], stat_cache: StatCache) -> list[Path]:
    """The Python files of the user's that `first` imports, transitively: modules found on `search`
    (source.python_path, and the folder an entrypoint's package lies in), not the standard library or
    installed packages. Read from the import statements, without running anything, so their digests
    can join the key before the step runs (as ninja reads a compiler's depfile); what the code imports
    by a computed name is found while the step runs (trtbuild.store.discovered)."""
    from trtbuild.store.code import imported_files, source_facts

    def facts(file: Path) -> dict:
        try:
            return stat_cache.memo(file, "python", lambda f: source_facts(f.read_bytes(), str(f)))
        except OSError:
            return {"imports": [], "named": [], "digest": ""}  # the export step reports it

    return sorted(set(imported_files(first, [str(p) for p in search], facts)) - {first})


def package_folder(module: str, file: Path) -> Path:
    """The folder holding an entrypoint's top-level package: "mypkg.nets.resnet" in .../src/mypkg/nets/
    resnet.py -> .../src (an editable install's sources, imported like the user's own)."""
    parts = len(module.split("."))
    return file.parents[parts if file.name == "__init__.py" else parts - 1]
