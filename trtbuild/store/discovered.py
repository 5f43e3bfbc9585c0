"""Inputs found while a step runs, the way ninja reads a compiler's depfile: the files the user's code
(a model's entrypoint, a calibration loader) opened, the folders it listed, the modules of the user's
it imported and the installed distributions it loaded. They cannot be in the key, which is taken
before the step runs; they are recorded with the result, and a hit whose recorded inputs moved is
not a hit.

- A file is digested when it is opened; one that changes before the step ends fails the step.
- Folder listings made by Python's import machinery are not inputs (a new file beside the recipe
  changes nothing); listings made by the user's code (a glob of images) are.
- Paths are recorded relative to the recipe's project, absolute outside it (trtbuild.planning.keys
  names the root), so checkouts at other paths share records.

Worker side: `with recording(ignore) as seen:` around the user's code, then `seen.result()`.
Processes the code forks meanwhile (a DataLoader's workers) inherit the hook and report through a
shared file; a child started with "spawn" is not seen.
Runner side: `valid(record)` before trusting one, `changed(record, root, stat_cache)` lists what moved.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

_active: list[Reads] = []  # audit hooks cannot be removed: one hook, fed to whoever records
_inside = threading.local()  # the hook's own opens (digesting a file) are not the user's
_forked = False  # in a child forked while recording: reads go to the recorder's file
_TRTBUILD = str(Path(__file__).resolve().parents[1]) + os.sep
_SYSTEM = ("/proc/", "/sys/", "/dev/", "/etc/", "/usr/")
_METADATA, _EGG_INFO = ".dist-info" + os.sep, ".egg-info" + os.sep
_CODE = (".py", ".pyc", ".so", ".pth")  # modules are recorded from sys.modules, by their source
_HEX = re.compile(r"^[0-9a-f]{64}$")
KINDS = ("files", "folders", "tools")


@functools.cache
def _installed() -> tuple[str, ...]:
    """The folders of the Python installation (what a step reads there is a tool, not a user file)."""
    import sysconfig  # here: a no-op build records nothing

    paths = sysconfig.get_paths()
    folders = (sys.prefix, sys.base_prefix, sys.exec_prefix, paths["purelib"], paths["platlib"], paths["stdlib"])
    return tuple({str(Path(p).resolve()) + os.sep for p in folders} - {"//"})


class Reads:
    def __init__(self, ignore: list[str]):
        # the step's own inputs (already in its key) and scratch folder: those paths and what is under them
        self.ignore = tuple(os.path.abspath(p) for p in ignore)
        self._under = tuple(p.rstrip(os.sep) + os.sep for p in self.ignore)
        self.files: dict[str, str] = {}
        self.folders: dict[str, str] = {}
        self.written: set[str] = set()  # scratch files the step made and read back are not inputs
        self.modules = set(sys.modules)  # what was loaded before the user's code ran
        # forked children append "<kind><digest> <path>\0" records (O_APPEND: each lands whole)
        import tempfile  # here: only a step's process records what it reads

        self.shared = tempfile.TemporaryFile(mode="a+b")

    def add(self, kind: str, path: str) -> None:
        """A file opened for reading ("f") or writing ("w"), or a folder listed ("d")."""
        if kind == "w":
            self._keep(kind, path, "-")
            return
        if self._ignored(path) or path in self.written or path in (self.files if kind == "f" else self.folders):
            return
        digest = file_digest(path) if kind == "f" else _listing_digest(path)
        if digest is None:
            return  # not a regular file (a FIFO, a device) or gone: not something a result depends on
        self._keep(kind, path, digest)

    def _ignored(self, path: str) -> bool:
        return path in self.ignore or path.startswith(self._under)

    def _keep(self, kind: str, path: str, digest: str) -> None:
        if _forked:
            os.write(self.shared.fileno(), f"{kind}{digest} {path}\0".encode(errors="surrogateescape"))
        elif kind == "w":
            self.written.add(path)
        else:
            (self.files if kind == "f" else self.folders)[path] = digest

    def _collect(self) -> None:
        self.shared.seek(0)
        for record in self.shared.read().decode(errors="surrogateescape").split("\0")[:-1]:
            digest, _, path = record[1:].partition(" ")
            if record[0] == "w":
                self.written.add(path)
            else:
                (self.files if record[0] == "f" else self.folders).setdefault(path, digest)
        self.shared.close()

    def result(self) -> dict[str, dict[str, str]]:
        """{"files": {path: sha256}, "folders": {path: digest of the listing}, "tools": {dist: version}}.
        Raises FileChangedError when a file changed after it was read."""
        files = {}
        for path, digest in self.files.items():
            if path in self.written or not os.path.lexists(path):
                continue  # the step's own scratch file (removed, or written by this process)
            if file_digest(path) != digest:
                raise FileChangedError(path)
            files[path] = digest
        for module in list(sys.modules.values()):
            source = getattr(module, "__file__", None)
            if isinstance(source, str) and source.endswith(".py") and _users(os.path.abspath(source)):
                digest = file_digest(os.path.abspath(source))
                if digest:
                    files.setdefault(os.path.abspath(source), digest)
        files = {p: d for p, d in files.items() if not self._ignored(p)}
        return {"files": dict(sorted(files.items())), "folders": dict(sorted(self.folders.items())),
                "tools": _distributions(set(sys.modules) - self.modules)}


class FileChangedError(Exception):
    def __init__(self, path: str):
        super().__init__(f"{path} changed while the step ran (after it was read): nothing was cached, run again")


@contextmanager
def recording(ignore: list[str] = ()):
    """Record the user's files opened for reading, and folders listed, inside the block."""
    _installed()  # here, not first inside the hook (importing sysconfig there would call the hook again)
    if not getattr(recording, "hooked", False):
        sys.addaudithook(_hook)
        os.register_at_fork(after_in_child=_in_child)
        recording.hooked = True
    reads = Reads(list(ignore))
    _active.append(reads)
    try:
        yield reads
    finally:
        _active.remove(reads)
        reads._collect()


def _in_child() -> None:
    global _forked
    _forked = True


def _hook(event: str, args: tuple) -> None:
    if not _active or event not in ("open", "os.listdir", "os.scandir"):
        return
    path = args[0]
    if isinstance(path, int) or path is None:
        return
    try:
        text = os.path.abspath(os.fsdecode(path))
    except (TypeError, ValueError):
        return
    if text.endswith(_CODE) or not _users(text) or getattr(_inside, "busy", False):
        return
    kind = "d" if event != "open" else "w" if _writes(args[1], args[2]) else "f"
    if kind == "d" and _by_importer():
        return
    _inside.busy = True
    try:
        for reads in _active:
            reads.add(kind, text)
    finally:
        _inside.busy = False


def _users(path: str) -> bool:
    """Outside the interpreter, the installed packages (and their metadata, wherever an editable
    install keeps it), trtbuild and the system's folders."""
    return not (path.startswith(_installed()) or path.startswith(_SYSTEM) or path.startswith(_TRTBUILD)
                or _METADATA in path or _EGG_INFO in path)


def _by_importer() -> bool:
    """Whether the listing is Python's import machinery looking for a module (it lists every folder
    on sys.path): not an input of the step."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _writes(mode, flags) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR) != 0


def file_digest(path: str) -> str | None:
    """sha256 of a regular file's bytes; None for anything else (never opens a FIFO or a device)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def _listing_digest(path: str) -> str | None:
    try:
        if not stat.S_ISDIR(os.stat(path).st_mode):
            return None
        return hashlib.sha256("\n".join(sorted(os.listdir(path))).encode(errors="surrogateescape")).hexdigest()
    except OSError:
        return None


def _distributions(modules: set[str]) -> dict[str, str]:
    """{distribution: version} of the installed packages that provided `modules`."""
    import importlib.metadata

    tops = {m.partition(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"trtbuild", "__main__"}
    found, unknown = {}, []
    for top in sorted(t for t in tops if not t.startswith("_")):
        module = sys.modules.get(top)
        source = getattr(module, "__file__", None) or ""
        if not source or _users(os.path.abspath(source)):
            continue  # the user's own code (recorded as files) or a namespace without files
        try:
            found[top] = importlib.metadata.version(top)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            unknown.append(top)
    unknown = [top for top in unknown if not _from_top_level(top, found)]
    if unknown:  # import names no top_level.txt beside them names (yaml -> PyYAML): scans every distribution
        names = importlib.metadata.packages_distributions()
        for top in unknown:
            for dist in names.get(top, []):
                try:
                    found[dist] = importlib.metadata.version(dist)
                except importlib.metadata.PackageNotFoundError:
                    pass
    return dict(sorted(found.items()))


def _from_top_level(top: str, found: dict[str, str]) -> bool:
    """Find the distribution of import name `top` (PIL -> pillow, torchgen -> torch) among those installed
    beside it: by their top_level.txt (one small file each), else by the RECORD of those without one,
    names most like `top` first, rather than every distribution's RECORD."""
    source = os.path.abspath(sys.modules[top].__file__)
    folder = os.path.dirname(os.path.dirname(source) if os.path.basename(source) == "__init__.py" else source)
    try:
        infos = sorted((e.path for e in os.scandir(folder) if e.name.endswith(".dist-info")),
                       key=lambda p: -len(os.path.commonprefix([os.path.basename(p).lower(), top.lower()])))
    except OSError:
        return False
    unlisted = []
    for info in infos:
        try:
            with open(os.path.join(info, "top_level.txt"), encoding="utf-8") as f:
                listed = top in f.read().split()
        except OSError:
            unlisted.append(info)
            continue
        if listed:
            return _add(info, found)
    for info in unlisted:
        try:
            with open(os.path.join(info, "RECORD"), encoding="utf-8") as f:
                if any(line.startswith((f"{top}/", f"{top}.py,")) for line in f):
                    return _add(info, found)
        except OSError:
            continue
    return False


def _add(info: str, found: dict[str, str]) -> bool:
    import importlib.metadata

    dist = importlib.metadata.Distribution.at(info)
    found[dist.metadata["Name"]] = dist.version
    return True


# Runner side


def valid(found) -> bool:
    """A `discovered` record read back (local or remote) has this shape, or it is not used."""
    if not isinstance(found, dict) or not set(found) <= set(KINDS):
        return False
    for kind, entries in found.items():
        if not isinstance(entries, dict):
            return False
        for label, value in entries.items():
            if not isinstance(label, str) or not label or "\0" in label or not isinstance(value, str):
                return False
            if kind != "tools" and not _HEX.match(value):
                return False
            if kind == "tools" and len(value) > 200:
                return False
    return True


def relative(found: dict[str, dict[str, str]], name) -> dict[str, dict[str, str]]:
    """The record with paths as `name(path)` gives them (trtbuild.planning.keys.portable)."""
    return {kind: {name(p) if kind != "tools" else p: d for p, d in entries.items()}
            for kind, entries in found.items() if entries}


def changed(found: dict[str, dict[str, str]], root: Path, stat_cache, tool_version) -> list[str]:
    """What moved since the record was made: files (by digest), folders (by listing), tools (by version)."""
    moved = []
    for label, digest in found.get("files", {}).items():
        path = root / label
        try:
            same = stat.S_ISREG(os.stat(path).st_mode) and stat_cache.digest(path) == digest
        except OSError:
            same = False
        if not same:
            moved.append(f"{label} changed")
    for label, digest in found.get("folders", {}).items():
        if _listing_digest(str(root / label)) != digest:
            moved.append(f"{label}/ changed")
    for dist, version in found.get("tools", {}).items():
        if tool_version(dist) != version:
            moved.append(f"{dist} {version} -> {tool_version(dist)}")
    return moved
