"""Inputs found while a step runs, the way ninja reads a compiler's depfile: the files (and folder
listings) a user's calibration loader opened. They cannot be in the key, which is taken before the
step runs; they are recorded with the result, and a hit whose recorded files moved is not a hit.

Worker side: `with recording() as seen:` around the user's code, then `seen.digests()`. Processes the
user's code forks meanwhile (a torch DataLoader's workers) inherit the hook and report to the
recorder through a shared file; a child started with "spawn" is not seen.
Runner side: `changed(discovered, base)` lists what moved since.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
import tempfile
from contextlib import contextmanager
from pathlib import Path

_active: list[Reads] = []  # audit hooks cannot be removed: one hook, fed to whoever records
_forked = False  # in a child forked while recording: reads go to the recorder's file
_INSTALLED = tuple({str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix, sysconfig.get_paths()["purelib"],
                                                      sysconfig.get_paths()["platlib"])})
_SYSTEM = ("/proc/", "/sys/", "/dev/", "/etc/", "/usr/")
_CODE = (".py", ".pyc", ".so", ".pth")  # code is hashed by import analysis (trtbuild.planning.sources), not here


class Reads:
    def __init__(self):
        self.files: set[str] = set()
        self.folders: set[str] = set()
        # forked children append "<kind><path>\0" records (O_APPEND: each lands whole)
        self.shared = tempfile.TemporaryFile(mode="a+b")

    def add(self, kind: str, path: str) -> None:
        if _forked:
            os.write(self.shared.fileno(), f"{kind}{path}\0".encode(errors="surrogateescape"))
        else:
            (self.files if kind == "f" else self.folders).add(path)

    def _collect(self) -> None:
        self.shared.seek(0)
        for record in self.shared.read().decode(errors="surrogateescape").split("\0")[:-1]:
            (self.files if record[0] == "f" else self.folders).add(record[1:])
        self.shared.close()

    def digests(self) -> dict[str, dict[str, str]]:
        """{"files": {path: sha256}, "folders": {path: digest of the sorted listing}}, for the record."""
        files = {p: _file_digest(p) for p in sorted(self.files) if os.path.isfile(p)}
        folders = {p: _listing_digest(p) for p in sorted(self.folders) if os.path.isdir(p)}
        return {"files": files, "folders": folders}


@contextmanager
def recording():
    """Record the user's files opened for reading, and folders listed, inside the block."""
    if not getattr(recording, "hooked", False):
        sys.addaudithook(_hook)
        os.register_at_fork(after_in_child=_in_child)
        recording.hooked = True
    reads = Reads()
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
    if event == "open" and (_writes(args[1], args[2])):
        return
    text = os.path.abspath(os.fsdecode(path))
    if text.endswith(_CODE) or text.startswith(_INSTALLED) or text.startswith(_SYSTEM):
        return
    for reads in _active:
        reads.add("f" if event == "open" else "d", text)


def _writes(mode, flags) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR) != 0


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _listing_digest(path: str) -> str:
    return hashlib.sha256("\n".join(sorted(os.listdir(path))).encode()).hexdigest()


def relative(found: dict[str, dict[str, str]], base: Path) -> dict[str, dict[str, str]]:
    """Paths relative to the recipe's folder, so two checkouts share the record."""
    return {kind: {os.path.relpath(p, base): d for p, d in entries.items()} for kind, entries in found.items()}


def changed(discovered: dict[str, dict[str, str]], base: Path, stat_cache) -> list[str]:
    """What moved since the record was made: files (by digest) and folders (by listing)."""
    moved = []
    for label, digest in discovered.get("files", {}).items():
        try:
            same = stat_cache.digest(base / label) == digest
        except OSError:
            same = False
        if not same:
            moved.append(label)
    for label, digest in discovered.get("folders", {}).items():
        try:
            same = _listing_digest(str(base / label)) == digest
        except OSError:
            same = False
        if not same:
            moved.append(label + "/")
    return moved
