"""Records of recipe files validated before: CACHE/users/<uid>/recipes/<key>.json (this user's alone: a
record is trusted as the recipe, so nobody else may write one; trtbuild.store.private).

A record holds what validating a recipe file gave (the normalized recipe and the line of every key),
so a later run reads it instead of parsing and validating again. Its key is the digest of the
file's bytes and of everything else the result depends on: trtbuild's version, the code of the
schema and of the modules it uses, pydantic's, pydantic-core's, PyYAML's and Python's versions, and
the text encoding. Any other byte, or any other code, finds no record and is validated in full. The
files a recipe names are not part of the result: they are checked on every load (trtbuild.recipes.loader).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path

from trtbuild.store.fsutil import loads_bounded, read_json


def key(data: bytes) -> str:
    return hashlib.sha256(_validator() + data).hexdigest()


def read(folder: Path, key: str) -> dict | None:
    """The record for `key`; None when there is none, or it is unreadable or not what write() stored under
    this key (edited, copied from another key, cut short): then the file is validated again, and the
    record rewritten."""
    path = os.path.join(folder, f"{key}.json")
    try:
        stored = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        stored = None
    try:
        ok = isinstance(stored, dict) and isinstance(stored.get("record"), str) and stored.get("check") == _check(
            key, stored["record"])
        record = loads_bounded(stored["record"]) if ok else None
    except ValueError:
        record = None
    if isinstance(record, dict) and record.keys() == {"recipe", "lines"}:
        return record
    import sys

    print(f"trtbuild: warning: validated-recipe record {path} is not the one stored under its key (edited or "
          "copied?); validating the recipe again", file=sys.stderr)
    return None


def to_json(record: dict) -> str | None:
    """The record as JSON text, or None when JSON would not give back the same values (a YAML date or
    set in `kwargs`, a NaN): such a recipe is validated on every run."""
    try:
        text = json.dumps(record, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return text if json.loads(text) == record else None


def write(folder: Path, key: str, text: str) -> None:
    """Store a record; a cache this user cannot write to only means validating again next time.
    Not fsynced: a record cut short by a crash does not parse, and is a miss."""
    path = folder / f"{key}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    stored = json.dumps({"check": _check(key, text), "record": text}, ensure_ascii=False)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)  # a fresh file, never written through a link left in its place
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666), "wb") as f:
            f.write(stored.encode())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _check(key: str, text: str) -> str:
    """Ties a record's text to the key it is stored under: an edit, or a record copied from another key,
    no longer matches (a checksum against mistakes and faults; against someone who means harm, the
    boundary is the user's own folder, which nobody else can write)."""
    return hashlib.sha256(f"{key}\n{text}".encode()).hexdigest()


def validator() -> str:
    """The digest of everything besides a file's bytes that validation depends on."""
    return _validator().decode()


@functools.cache
def _validator() -> bytes:
    """A digest of everything besides the file's bytes that validation depends on."""
    import locale
    import sys

    from trtbuild import __version__
    from trtbuild.store import versions

    found = [versions.version(dist) for dist in ("pydantic", "pydantic-core", "PyYAML")]
    # From the loader, the walk reaches the YAML reading, validation and the schema.
    parts = [__version__, sys.version, locale.getpreferredencoding(False), found, _code("trtbuild.recipes.loader")]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest().encode()


def _code(module: str) -> str:
    """A digest of the module's code and of every trtbuild module it imports, transitively."""
    from trtbuild.store.code import code_digest, package_code

    return code_digest(package_code(module))
