"""Inputs found while a step runs, the way ninja reads a compiler's depfile: the files the user's code
(a model's entrypoint, a calibration loader) read or looked for, the folders it listed and the installed
distributions it loaded. They cannot be in the key, which is taken before the step runs; they are
recorded with the result, and a hit whose recorded inputs moved is not a hit.

How reads are seen (docs/reference/caching.md says what each platform guarantees):
- Linux (x86_64, aarch64): every system call of the step's process, its threads and children that names
  a path (open, stat, access, readlink, exec...) is handed to a watcher process before it runs
  (trtbuild.store.watcher): reads by native code (safetensors, HDF5, TensorFlow), memory maps, `.py`
  files run as data and files looked for but absent are seen, each digested at that moment.
- Elsewhere (or TRTBUILD_OBSERVE=python): Python's audit hook, which sees Python's open() only; the
  step's record says so.
- Either way, folder listings made by the user's Python code (a glob of images) are inputs; those made
  by Python's import machinery are not (a new file beside the recipe changes nothing).
- A file that changes (or appears) after it was read fails the step. Installed distributions, wherever
  they sit on sys.path, are tools keyed by name and version (trtbuild.store.distributions), never files.
- Paths are recorded relative to the recipe's project, absolute outside it (trtbuild.planning.keys).

Worker side: `with recording(ignore) as seen:` around the user's code, then `seen.result()`.
Runner side: `valid(record)` before trusting one, `changed(record, root, stat_cache)` lists what moved.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from trtbuild.store.distributions import interpreter_folders, library_roots, provided_by

_active: list[Reads] = []  # audit hooks cannot be removed: one hook, fed to whoever records
_inside = threading.local()  # the hook's own opens (digesting a file) are not the user's
_forked = False  # in a child forked while recording: reads go to the recorder's file
_TRTBUILD = str(Path(__file__).resolve().parents[1]) + os.sep
_SYSTEM = ("/proc/", "/sys/", "/dev/", "/etc/", "/usr/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/bin/", "/sbin/",
           "/run/")
_DERIVED = (".dist-info" + os.sep, ".egg-info" + os.sep, os.sep + "__pycache__" + os.sep)
_HEX = re.compile(r"^[0-9a-f]{64}$")
KINDS = ("files", "folders", "absent", "tools")


class Scope:
    """Which paths are the user's: not the step's own inputs or scratch folder (`ignore`: already in its
    key), not the Python installation, installed distributions, trtbuild or the system's folders, not
    package metadata or compiled-bytecode caches (derived from the sources, which are seen).
    `searched`: the folders on sys.path when the step began, where libraries probe for optional files
    of their own (torch's CUDA libraries): what is absent there is not an input."""

    def __init__(self, ignore: list[str], installed: tuple[str, ...] | None = None,
                 searched: tuple[str, ...] | None = None):
        self.ignore = tuple(os.path.abspath(p) for p in ignore)
        self._under = tuple(p.rstrip(os.sep) + os.sep for p in self.ignore)
        if installed is None:
            installed = (*interpreter_folders(), *library_roots(sys.path), *_SYSTEM, _TRTBUILD)
        if searched is None:
            searched = tuple(os.path.abspath(p).rstrip(os.sep) + os.sep for p in sys.path if p)
        self.installed, self.searched = installed, searched

    def is_installed(self, path: str) -> bool:
        return path.startswith(self.installed)

    def users(self, path: str) -> bool:
        return not (path.startswith(self.installed) or path in self.ignore or path.startswith(self._under)
                    or any(part in path for part in _DERIVED))

    def settings(self) -> dict:
        return {"ignore": list(self.ignore), "installed": list(self.installed), "searched": list(self.searched)}

    @classmethod
    def from_settings(cls, settings: dict) -> Scope:
        return cls(settings["ignore"], tuple(settings["installed"]), tuple(settings["searched"]))


class Reads:
    def __init__(self, scope: Scope, watching=None, why_not: str = "", modules: set[str] | None = None):
        self.scope, self.watching, self.why_not = scope, watching, why_not
        self.files: dict[str, str] = {}
        self.folders: dict[str, str] = {}
        self.absent: set[str] = set()
        self.written: set[str] = set()  # scratch files the step made and read back are not inputs
        self.unreadable = 0
        self.stamps: dict[str, list[int]] = {}  # the watcher's stat of each file it digested
        self.modules = set(sys.modules) if modules is None else modules  # loaded before the step began
        # forked children append "<kind><digest> <path>\0" records (O_APPEND: each lands whole)
        import tempfile  # here: only a step's process records what it reads

        self.shared = tempfile.TemporaryFile(mode="a+b")

    @property
    def observed(self) -> str:
        """How reads were seen, for the step's record and report."""
        if self.watching and self.unreadable:
            return f"system calls, except {self.unreadable} calls the watcher could not read"
        if self.watching:
            return "system calls"
        return f"Python's open() only, reads by native code not seen ({self.why_not or 'not the last step'})"

    def add(self, kind: str, path: str) -> None:
        """A file opened for reading ("f") or writing ("w"), or a folder listed ("d")."""
        if kind == "w":
            if path not in self.files:  # read first, it stays an input: the end of the step checks it
                self._keep(kind, path, "-")
            return
        if path in self.written or path in (self.files if kind == "f" else self.folders):
            return
        if kind == "f" and path.endswith(".pyc"):
            return  # bytecode: its source, found in sys.modules at the end, is the input
        digest = file_digest(path) if kind == "f" else _listing_digest(path)
        if digest is None:
            if kind == "f" and not os.path.lexists(path):
                self._keep("a", path, "-")  # a failed open: the file appearing later changes the result
            return  # not a regular file (a FIFO, a device): not something a result depends on
        self._keep(kind, path, digest)

    def _keep(self, kind: str, path: str, digest: str) -> None:
        if _forked:
            os.write(self.shared.fileno(), f"{kind}{digest} {path}\0".encode(errors="surrogateescape"))
        elif kind == "w":
            self.written.add(path)
        elif kind == "a":
            self.absent.add(path)
        else:
            (self.files if kind == "f" else self.folders)[path] = digest

    def _collect(self) -> None:
        self.shared.seek(0)
        for record in self.shared.read().decode(errors="surrogateescape").split("\0")[:-1]:
            digest, _, path = record[1:].partition(" ")
            if record[0] == "w":
                if path not in self.files:
                    self.written.add(path)
            elif record[0] == "a":
                self.absent.add(path)
            else:
                (self.files if record[0] == "f" else self.folders).setdefault(path, digest)
        self.shared.close()

    def result(self) -> dict[str, dict[str, str]]:
        """{"files": {path: sha256}, "folders": {path: digest of the listing}, "absent": {path: ""},
        "tools": {dist: version}}. Raises FileChangedError when a file changed after it was read, or
        appeared after it was looked for."""
        if self.watching:
            seen = self.watching.finish()
            self.unreadable = seen["unreadable"]
            self.stamps = seen["stamps"]
            self.written.update(seen["written"])
            self.absent.update(seen["absent"])
            for path, digest in seen["files"].items():
                self.files.setdefault(path, digest)
        files = {}
        for path, digest in self.files.items():
            if path in self.written or not os.path.lexists(path):
                continue  # the step's own scratch file (removed, or written by this process)
            if not self._unchanged(path) and file_digest(path) != digest:
                raise FileChangedError(path)
            files[path] = digest
        for module in list(sys.modules.values()):  # imported by a computed name where no call was seen
            source = getattr(module, "__file__", None)
            if isinstance(source, str) and source.endswith(".py") and self.scope.users(os.path.abspath(source)):
                if (digest := file_digest(os.path.abspath(source))) is not None:
                    files.setdefault(os.path.abspath(source), digest)
        absent = {p: "" for p in sorted(self.absent - self.written - files.keys())}
        for path in absent:
            if os.path.lexists(path):
                raise FileChangedError(path, "appeared")
        return {"files": dict(sorted(files.items())), "folders": dict(sorted(self.folders.items())),
                "absent": absent, "tools": provided_by(set(sys.modules) - self.modules, lambda p: not self.scope.is_installed(p))}


    def _unchanged(self, path: str) -> bool:
        """Whether the file's stat is the one taken when it was digested (spares re-reading a checkpoint).
        As git's racily clean entries: a file changed within 2 s of that stat may have changed again within
        the file system's timestamp granularity, so it is read again."""
        kept = self.stamps.get(path)
        try:
            return kept is not None and kept[:4] == stamp(os.stat(path)) and kept[2] < kept[4] - 2_000_000_000
        except OSError:
            return False


def stamp(st: os.stat_result) -> list[int]:
    """What changes when a file's bytes do: size, modification and change times, inode."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class FileChangedError(Exception):
    def __init__(self, path: str, how: str = "changed"):
        super().__init__(f"{path} {how} while the step ran (after it was read): nothing was cached, run again")


@contextmanager
def recording(ignore: list[str] = (), native: bool = True, preload: tuple[str, ...] = ()):
    """Record the user's files read (or looked for) and folders listed inside the block. `native`: watch
    system calls where the platform allows (the process must exit after the step: see syscall_filter).
    `preload`: installed modules imported first, unwatched (their distributions are still recorded)."""
    scope = Scope(list(ignore))
    before = set(sys.modules)
    for module in preload:
        try:
            __import__(module)
        except Exception:  # not installed, or broken: the step's own import reports it
            pass
    if not getattr(recording, "hooked", False):
        sys.addaudithook(_hook)
        os.register_at_fork(after_in_child=_in_child)
        recording.hooked = True
    watching, why_not = None, ""
    if native:
        from trtbuild.store.watcher import watch

        watching, why_not = watch(scope)
    reads = Reads(scope, watching, why_not, before)
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
    if isinstance(path, int) or path is None or getattr(_inside, "busy", False):
        return
    try:
        text = os.path.abspath(os.fsdecode(path))
    except (TypeError, ValueError):
        return
    kind = "d" if event != "open" else "w" if _writes(args[1], args[2]) else "f"
    _inside.busy = True
    try:
        for reads in _active:
            if (kind == "d" or not reads.watching) and reads.scope.users(text) and not (kind == "d" and _by_importer()):
                reads.add(kind, text)
    finally:
        _inside.busy = False


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
            if kind == "absent" and value != "":
                return False
            if kind in ("files", "folders") and not _HEX.match(value):
                return False
            if kind == "tools" and len(value) > 200:
                return False
    return True


def relative(found: dict[str, dict[str, str]], name) -> dict[str, dict[str, str]]:
    """The record with paths as `name(path)` gives them (trtbuild.planning.keys.portable)."""
    return {kind: {name(p) if kind != "tools" else p: d for p, d in entries.items()}
            for kind, entries in found.items() if entries}


def changed(found: dict[str, dict[str, str]], root: Path, stat_cache, tool_version) -> list[str]:
    """What moved since the record was made: files (by digest), folders (by listing), files looked for
    (by existence), tools (by version)."""
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
    for label in found.get("absent", {}):
        if os.path.lexists(root / label):
            moved.append(f"{label} appeared")
    for dist, version in found.get("tools", {}).items():
        if tool_version(dist) != version:
            moved.append(f"{dist} {version} -> {tool_version(dist)}")
    return moved
