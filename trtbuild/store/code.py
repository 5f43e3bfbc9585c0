"""Python code as a build input: which files a module imports, and a digest of what the code does.

One walker serves trtbuild's own code (a step kind's code version, the recipe records' validator)
and the user's (a model's entrypoint, a calibration loader): `imported_files` follows `import`
statements, read with `ast` without running anything, to the files a search path resolves them to.

A module's digest covers its syntax tree without docstrings, so comments, docstrings and layout do
not change a key. trtbuild's own facts are computed once per version of its sources and kept in a
small index in the cache (CACHE/code/; parsing every module costs a quarter of a second), once a
Cache names that folder; a process without one (a worker checking a step) parses what it needs.
An index is trusted only where no one else can have written it (`_trusted`): in a shared cache
another user's index is ignored, as a forged digest would give a wrong hit. Where a step would run
code other than the key's, the code version is computed from the files themselves (`verified_code`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from importlib.machinery import PathFinder
from pathlib import Path

from trtbuild.store.fsutil import loads_bounded, read_record_stat

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the trtbuild package
_INDEX_VERSION = 2  # 2: {facts, walks}
_index_folder: list[Path] = []  # where the index is kept: set by the cache (keep_index_in)


def keep_index_in(folder: Path) -> None:
    _index_folder[:] = [folder]


def source_facts(data: bytes, filename: str = "<module>") -> dict:
    """{"digest": the syntax tree without docstrings, "imports": [(module, level)], "named": [dotted
    strings that look like trtbuild modules]}; a file that does not parse is digested by its bytes."""
    import ast  # only when a file is new to the index: a no-op build parses nothing

    try:
        tree = ast.parse(data, filename)
    except (SyntaxError, ValueError):
        return {"digest": hashlib.sha256(data).hexdigest(), "imports": [], "named": []}
    imports, named = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [[alias.name, 0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            imports.append([base, node.level])
            imports += [[f"{base}.{alias.name}" if base else alias.name, node.level] for alias in node.names]
        elif isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            node.body = [s for s in node.body if not _is_docstring(s)] or [ast.Pass()]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("trtbuild."):
            named.append(node.value)
    return {"digest": hashlib.sha256(ast.dump(tree).encode()).hexdigest(), "imports": imports, "named": named}


def _is_docstring(statement) -> bool:
    import ast

    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


def imported_files(first: Path, roots: list[str], facts: Callable[[Path], dict],
                   also: Callable[[Path, dict], Iterable[str]] = lambda file, found: ()) -> list[Path]:
    """`first` and the Python files it imports, transitively, found on `roots` (relative imports from
    the importing file's package); packages' __init__.py files included. `facts(file)` gives a file's
    source_facts; `also(file, facts)` names more modules to follow (modules loaded by name)."""
    found: dict[Path, None] = {}
    pending = [first]
    while pending:
        file = pending.pop()
        if file in found:
            continue
        found[file] = None
        known = facts(file)
        for module, level in known["imports"]:
            where = (str(file.parents[level - 1]),) if level else tuple(roots)
            pending += _files_of(module, where)
        for module in also(file, known):
            pending += _files_of(module, tuple(roots))
    return list(found)


@functools.lru_cache(maxsize=4096)
def _files_of(module: str, roots: tuple[str, ...]) -> list[Path]:
    """The source files (packages' __init__.py included) that importing `module` from `roots` runs."""
    files, paths, parts = [], roots, module.split(".")
    for depth in range(len(parts)):
        if not parts[depth]:
            break
        spec = PathFinder.find_spec(".".join(parts[: depth + 1]), paths)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            break
        files.append(Path(spec.origin).resolve())
        paths = list(spec.submodule_search_locations or [])
        if not paths:
            break
    return files


# trtbuild's own code


def module_path(module: str) -> Path:
    """The file of a trtbuild module; of a plug-in's (a step kind outside trtbuild), where Python finds it."""
    if module.partition(".")[0] != "trtbuild":
        import importlib.util

        spec = importlib.util.find_spec(module)
        return Path(spec.origin) if spec is not None and spec.origin else PACKAGE_ROOT / "(not found)"
    base = PACKAGE_ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def package_code(start: str, registries: tuple[str, ...] = ()) -> dict[str, str]:
    """{module: digest} for trtbuild module `start` and every trtbuild module it imports or names in a
    string (modules loaded by name), transitively; `registries` name modules whose strings are not
    followed (a registry names every module of its kind, and one runs only its own). Kept with the
    index (it depends only on what the index is keyed by): a no-op build resolves no import."""
    index = _package_index()
    name = " ".join((start, *registries))
    kept = _walks.get(name)
    if kept is None:
        kept = _walks[name] = _walk(index.get, start, registries)
        if _index_file_now:
            _write_index(_index_file_now[0], {"facts": index, "walks": _kept_walks(_index_file_now[0]) | _walks})
    return dict(kept)


def _walk(facts: Callable[[str], dict | None], start: str, registries: tuple[str, ...]) -> dict[str, str]:
    """{module: digest} of the trtbuild modules `start` reaches; `facts(path)`: a module's source_facts."""
    root = str(PACKAGE_ROOT)
    skip = {str(module_path(r)) for r in registries}

    def named(file: Path, found: dict) -> list[str]:
        return [] if str(file) in skip else found["named"]

    def ours(file: Path) -> dict:  # only trtbuild's imports can resolve to trtbuild's files
        found = facts(str(file)) or _NOTHING
        return found | {"imports": [i for i in found["imports"] if i[0].startswith("trtbuild")]}

    files = imported_files(module_path(start), [root], ours, named)
    return {_module_name(f): known["digest"] for f in files if (known := facts(str(f))) is not None}


def code_digest(modules: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(modules, sort_keys=True).encode()).hexdigest()[:16]


def raw_digests(modules: Iterable[str]) -> dict[str, str | None]:
    """{module: sha256 of its file's bytes} of this installation's trtbuild (None: no such module)."""
    result = {}
    for module in modules:
        try:
            result[module] = hashlib.sha256(module_path(module).read_bytes()).hexdigest()
        except OSError:
            result[module] = None
    return result


_NOTHING = {"imports": [], "named": [], "digest": ""}


def _module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


_walks: dict[str, dict[str, str]] = {}  # package_code's answers for the index in use
_index_file_now: list[Path] = []  # the index file in use, if any


@functools.cache
def _package_index() -> dict[str, dict]:
    """source_facts of every trtbuild module by its path: from the index kept for this exact set of
    source bytes and of entries import resolution sees, else parsed now (and the index written for the
    next process), with the package_code walks kept beside it."""
    data, others = _package_files()
    version = hashlib.sha256(json.dumps([_INDEX_VERSION, sorted((p, hashlib.sha256(b).hexdigest())
                                                                for p, b in data.items()), sorted(others)]).encode()
                             ).hexdigest()
    kept = _index_file(version)
    if kept is not None:
        _index_file_now[:] = [kept]
        found = _stored_index(kept, data)
        if found is not None:
            return found
    mine = _user_index_file(version)  # the user's own, across caches: a new cache parses nothing
    index = _stored_index(mine, data) if mine is not None else None
    if index is None:
        index = {path: source_facts(raw, path) for path, raw in data.items()}
        if mine is not None:
            _write_index(mine, {"facts": index, "walks": {}}, keep=8)  # a few installations side by side
    if kept is not None:
        _write_index(kept, {"facts": index, "walks": _walks})
    return index


def _stored_index(path: Path, data: dict[str, bytes]) -> dict[str, dict] | None:
    """The facts kept in `path` for these sources (their walks join _walks), or None: none, not valid, or
    not trusted."""
    stored = _read_trusted(path)
    if stored is None:
        return None
    index = stored.get("facts") if isinstance(stored, dict) else None
    if not (isinstance(index, dict) and index.keys() == data.keys() and all(_valid(v) for v in index.values())):
        return None
    _walks.update(_kept_walks(path, stored))
    return index


def _package_files() -> tuple[dict[str, bytes], list[list]]:
    """The bytes of every .py file of the trtbuild package (folders under links not followed, as
    Path.rglob), and every other entry importing could resolve a module to: folders, links (and where
    they point), extension modules, sourceless .pyc, and whatever beside the package is named trtbuild*."""
    data: dict[str, bytes] = {}
    others = [[name, "beside"] for name in os.listdir(PACKAGE_ROOT)
              if name.startswith("trtbuild") and name != "trtbuild"]
    pending = [str(PACKAGE_ROOT / "trtbuild")]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name == "__pycache__":
                    continue
                if entry.is_symlink():
                    others.append([entry.path, "link", os.readlink(entry.path)])
                if entry.is_dir():
                    others.append([entry.path, "folder"])
                    if not entry.is_symlink():
                        pending.append(entry.path)
                elif entry.name.endswith(".py") and entry.is_file():
                    with open(entry.path, "rb") as f:
                        data[entry.path] = f.read()
                else:
                    others.append([entry.path, "file"])
    return data, others


def _kept_walks(path: Path, stored=None) -> dict[str, dict[str, str]]:
    """The walks kept in an index file, or none when they are not what package_code writes."""
    if stored is None:
        stored = _read_trusted(path)
    walks = stored.get("walks") if isinstance(stored, dict) else None
    if not isinstance(walks, dict) or not all(
            isinstance(found, dict) and all(isinstance(m, str) and isinstance(d, str) for m, d in found.items())
            for found in walks.values()):
        return {}
    return walks


_MOST = 16 << 20  # an index is ~100 KB: anything far larger is not one


def _read_trusted(path: Path):
    """An index file's JSON, if only this user can have written it, else None: fsutil's bounded read of a
    regular file (not a link, FIFO or device), owned by this user and writable by no one else, either by
    its mode or because its folder is closed to them (the per-user folder, 0700)."""
    from trtbuild.store.private import alone

    try:
        data, st = read_record_stat(path, _MOST)
        if st.st_uid != os.geteuid() or (st.st_mode & 0o022 and not alone(os.lstat(path.parent))):
            return None
        return loads_bounded(data)
    except (OSError, ValueError):
        return None


def verified_code(start: str, registries: tuple[str, ...] = ()) -> dict[str, str]:
    """package_code computed from the files as they are now, parsing each module it reaches (no index)."""
    parsed: dict[str, dict | None] = {}

    def facts(path: str) -> dict | None:
        if path not in parsed:
            try:
                parsed[path] = source_facts(Path(path).read_bytes(), path)
            except OSError:
                parsed[path] = None
        return parsed[path]

    return _walk(facts, start, registries)


def _valid(facts) -> bool:
    return (isinstance(facts, dict) and isinstance(facts.get("digest"), str)
            and isinstance(facts.get("imports"), list) and isinstance(facts.get("named"), list)
            and all(isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) and isinstance(i[1], int)
                    for i in facts["imports"]) and all(isinstance(n, str) for n in facts["named"]))


def _user_index_file(version: str) -> Path | None:
    """Where this user keeps the index for this version of the sources (beside the user's other caches)."""
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trtbuild" / "code"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except (OSError, RuntimeError):  # no home, or a read-only one
        return None
    return folder / f"{version}.json"


def _index_file(version: str) -> Path | None:
    """Where the index for this version of the sources is kept; None: nowhere (compute it)."""
    if not _index_folder:
        return None
    try:
        _index_folder[0].mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only cache: parse in this process
        return None
    return _index_folder[0] / f"{version}.json"


def _write_index(path: Path, index: dict, keep: int = 1) -> None:
    """Write the index; of the indexes of other source versions only the newest `keep` - 1 stay (one
    installation's edits would pile up)."""
    from trtbuild.store.fsutil import atomic_write  # readable by the other users of a shared cache

    try:
        atomic_write(path, json.dumps(index).encode())
        others = sorted((p for p in path.parent.glob("*.json") if p != path), key=lambda p: p.stat().st_mtime)
        for old in others[:max(0, len(others) - keep + 1)]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
