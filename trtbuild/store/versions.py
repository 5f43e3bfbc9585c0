"""Installed distributions' versions, kept between runs: a no-op build need not import importlib.metadata.

Keys hold the versions of the tools a step calls (onnx, onnxsim, tensorrt-rtx...). Looking them up
imports importlib.metadata and scans sys.path (a fifth of a no-op build of one recipe). Once a cache
names a file for them (keep_in), answers are kept there with what they depend on: the Python, the
sys.path entries and the *.dist-info / *.egg-info folders in each (installing or removing a
distribution adds or removes one), and for each version the stat of the METADATA file it was read
from (an edit in place). Any difference, or a file not as written, asks importlib.metadata again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from trtbuild.store.fsutil import read_json_or_warn

_FILE: list[Path] = []  # where answers are kept (set by the cache)
_memo: dict | None = None  # {"where": fingerprint, "versions": {dist: [version, METADATA path, stat]}}
_NONE = [None, None, None]  # not installed (while the fingerprint holds)


def keep_in(path: Path | None) -> None:
    """Keep answers in `path` (in the user's own folder of the cache); None: nowhere."""
    global _memo
    if _FILE[:1] != ([path] if path else []):
        _FILE[:] = [path] if path else []
        _memo = None


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _fingerprint() -> list:
    entries = [os.path.abspath(entry or ".") for entry in sys.path]  # "" is the working directory
    return [sys.version, sys.executable, [[entry, _metadata_folders(entry)] for entry in entries]]


def _metadata_folders(entry: str):
    """What importlib.metadata finds distributions by in a sys.path entry: the names of its *.dist-info
    and *.egg-info folders (a digest), or the stat of an entry that is no folder (a zip). Listed once
    per process (a process that installs a distribution is not a build)."""
    if entry not in _listed:
        _listed[entry] = _list(entry)
    return _listed[entry]


_listed: dict[str, object] = {}  # sys.path entry -> what _list found


def _list(entry: str):
    try:
        with os.scandir(entry) as found:
            names = sorted(e.name for e in found if e.name.lower().endswith((".dist-info", ".egg-info")))
    except NotADirectoryError:
        return _stat(entry)
    except (OSError, ValueError):
        return None
    return hashlib.sha256("\0".join(names).encode()).hexdigest()


def _loaded() -> dict:
    """The answers kept for this Python and sys.path as they are now (checked on every call: callers
    memoize, so a run asks a handful of times; a test may change sys.path meanwhile)."""
    global _memo
    where = _fingerprint()
    if _memo is None or _memo["where"] != where:
        _memo = {"where": where, "versions": {}}
        if _FILE:
            try:
                kept = read_json_or_warn(_FILE[0], "the kept tool versions")
                if isinstance(kept, dict) and kept.get("where") == _memo["where"] and isinstance(kept.get("versions"), dict):
                    _memo["versions"] = kept["versions"]
            except (OSError, ValueError):
                pass
    return _memo


def version(dist: str) -> str | None:
    """The installed version of distribution `dist` (importlib.metadata.version), None when not installed."""
    kept = _loaded()["versions"].get(dist)
    if (isinstance(kept, list) and len(kept) == 3 and (kept == _NONE or (
            isinstance(kept[0], str) and isinstance(kept[1], str) and kept[2] is not None and _stat(kept[1]) == kept[2]))):
        return kept[0]
    import importlib.metadata

    try:
        found = importlib.metadata.distribution(dist)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        _keep(dist, _NONE)
        return None
    answer = found.version
    folder = getattr(found, "_path", None)  # a PathDistribution: its METADATA file tells an edit
    metadata = os.path.join(folder, "METADATA") if folder is not None else None
    if metadata and not os.path.exists(metadata):
        metadata = os.path.join(folder, "PKG-INFO")
    signature = _stat(metadata) if metadata else None
    if isinstance(answer, str) and signature is not None:
        _keep(dist, [answer, metadata, signature])
    return answer


def _keep(dist: str, entry: list) -> None:
    memo = _loaded()
    memo["versions"][dist] = entry
    if not _FILE:
        return
    path = _FILE[0]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:  # not fsynced: a file cut short does not parse, and is asked again
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666), "w") as f:
            json.dump(memo, f)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
