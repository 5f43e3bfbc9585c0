"""Content digests, canonical JSON, and a stat cache that skips re-hashing unchanged files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from collections.abc import Callable

from trtbuild.store.fsutil import atomic_write, fsync_file, read_json_or_warn
from trtbuild.store.validate import fact_ok, stat_entry_ok

_CHUNK = 1 << 20
# A file modified this recently may change again within the same mtime tick (git's "racy" case).
_RACY_SECONDS = 2.0


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_json(obj: object) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def digest_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def stat_signature(path: str | os.PathLike) -> list[int]:
    """What changes whenever a file's bytes may have: size, mtime, ctime, inode."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


# Files this process wrote with write_hashed: path -> {"digest", "stat"}. A worker hands those of a
# step's output folder to the runner, which then stores them without reading them again.
written: dict[str, dict] = {}


def write_hashed(path: str | os.PathLike, data) -> None:
    """Write `data` (bytes or a buffer) to `path` durably, hashing it on a second thread meanwhile
    (sha256 and the write both release the GIL): storing a 100 MB artifact then costs 0.13 s less."""
    view = memoryview(data).cast("B")
    hasher = hashlib.sha256()
    hashing = threading.Thread(target=hasher.update, args=(view,))
    hashing.start()
    try:
        with open(path, "wb") as f:
            f.write(view)
            f.flush()
            os.fsync(f.fileno())
    finally:
        hashing.join()
    written[os.fspath(path)] = {"digest": hasher.hexdigest(), "stat": stat_signature(path)}


def note_written(path: str | os.PathLike) -> None:
    """Note a file another library wrote as write_hashed does, hashed and fsynced here: for a worker with
    time to spare (waiting on a forked check) rather than the runner after the step."""
    digest = digest_file(path)
    fsync_file(path)
    written[os.fspath(path)] = {"digest": digest, "stat": stat_signature(path)}


class HashedFile:
    """A file written in pieces (a plan streamed out of the builder), hashed as it is written; on close it is
    fsynced and noted like write_hashed's files, so it is stored without being read again. A writer left by
    an exception removes what it wrote."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._file = open(self.path, "wb")
        self._hasher = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._file.write(view)
        self._hasher.update(view)
        self.size += len(view)
        return len(view)

    def __enter__(self) -> HashedFile:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            written[self.path] = {"digest": self._hasher.hexdigest(), "stat": stat_signature(self.path)}
        else:
            self._file.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def digest_written(path: str | os.PathLike, noted: dict | None) -> tuple[str, bool]:
    """(digest, durable) of a file: what write_hashed noted, if the file's stat has not moved since
    (then it is fsynced too), else hashed now (and not known to be on disk)."""
    if noted is not None and noted["stat"] == stat_signature(path):
        return noted["digest"], True
    return digest_file(path), False


class StatCache:
    """Memoizes facts about files (their digest, the files they reference) by (size, mtime, ctime, inode).

    Entries for files modified in the last couple of seconds are not trusted, so an edit made right
    after a build is still seen. Concurrent runs may overwrite each other's saves; that only costs a re-hash.
    """

    def __init__(self, path: Path):
        self.path = path
        self._dirty = False
        self._real: dict[str, str] = {}  # path -> resolved path; an entry is checked by its stat anyway
        self._checked: set[int] = set()  # ids of entries whose shape was checked (they live as long as this)
        self._entries: dict[str, dict] = read_json_or_warn(path, "the stat cache")  # a miss: a slower run
        if not isinstance(self._entries, dict):  # not what save() writes: start afresh (entries are checked too)
            self._entries = {}

    def memo(self, file: Path, fact: str, compute: Callable[[Path], object], st: os.stat_result | None = None) -> object:
        """`st`: the file's stat when the caller has just taken it (a regular file's lstat is its stat)."""
        signature = stat_signature(file) if st is None else [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        key = self._resolved(file)
        entry = self._entries.get(key)
        if entry is not None and id(entry) not in self._checked:  # read back: checked once per run, facts too
            if stat_entry_ok(entry) and all(fact_ok(f, v) for f, v in entry["facts"].items()):
                self._checked.add(id(entry))
            else:
                entry = None
        if entry is not None and entry["stat"] == signature and fact in entry["facts"]:
            return entry["facts"][fact]
        value = compute(file)
        if time.time() - signature[1] / 1e9 > _RACY_SECONDS:
            if not entry or entry["stat"] != signature:
                entry = self._entries[key] = {"stat": signature, "facts": {}}
            entry["facts"][fact] = value
            self._dirty = True
        return value

    def _resolved(self, file: Path) -> str:
        """The entry's name: the file's real path, looked up once per run (resolving costs a stat per
        path component). A symlink moved meanwhile cannot mislead: the entry must match the stat."""
        name = str(file)
        if name not in self._real:
            self._real[name] = str(Path(file).resolve())
        return self._real[name]

    def remember(self, file: Path, fact: str, value: object) -> None:
        """Record a fact computed by whoever wrote the file (the store's objects, named by their digest)."""
        self._entries[self._resolved(file)] = {"stat": stat_signature(file), "facts": {fact: value}}
        self._dirty = True

    def digest(self, file: Path, st: os.stat_result | None = None) -> str:
        return self.memo(file, "sha256", digest_file, st)

    def save(self) -> None:
        if self._dirty:
            try:
                atomic_write(self.path, canonical_json(self._entries), over_folder=True)
            except OSError:  # another user's cache file, a read-only cache: the next run hashes again
                pass
            self._dirty = False
