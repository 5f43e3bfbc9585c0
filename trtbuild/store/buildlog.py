"""CACHE/buildlog/<scope>: one compact file a no-op build reads instead of one file per step (ninja's .ninja_log).

A no-op build of many recipes would otherwise open and parse an action record per step, a state file
and an out/ manifest per recipe, and hash every step's key components. The build log keeps, from
earlier runs:

- records: action record -> (the stat of actions/ab/<key>.json when it was read, the record);
- states:  recipe -> (the stat of state/<recipe>.json, {step id: [key, status]});
- shown:   recipe -> (the stat of out/<recipe>/'s manifest, the manifest);
- keys:    a digest of a step's key components (marshal format 2: equal bytes are equal values) -> the key;
- recipes: recipe file -> (its stat, [the validator's digest, its record's key, the record's text]).

An entry is served only while the file it stands for has the same stat (size, mtime, ctime, inode)
as the file that was read, so an edited, replaced or removed file is read again; files modified in
the last seconds are not logged at all (git's racy case: a later write could keep the mtime). The
files themselves stay the truth: the log only spares reading them. A log that is unreadable, cut
short, edited (its checksum) or of another format is ignored whole, and each entry is validated as
the file it stands for would be; the slow path rebuilds the log. Saved once per run, when it learned
something, merged under a lock with what concurrent runs saved meanwhile, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import time
from pathlib import Path

from trtbuild.store.fsutil import atomic_write, read_record
from trtbuild.store.validate import is_key, record_problem

FORMAT = f"trtbuild-buildlog 1 marshal-{marshal.version}"
SECTIONS = ("records", "states", "shown", "keys", "recipes")
_RACY_SECONDS = 2.0  # as the stat cache: a file this fresh may change again within its mtime tick
_LIMIT = 200_000  # entries kept per section: the ones used last


def signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def settled(st: os.stat_result) -> bool:
    """Whether a file is old enough for its stat to stand for its bytes."""
    return time.time() - st.st_mtime_ns / 1e9 > _RACY_SECONDS


def stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def components_digest(components: dict) -> str | None:
    """A digest of key components that equals another only for equal values (of the same types), or
    None for a value marshal cannot hold. Much cheaper than the key's canonical JSON."""
    try:
        return hashlib.sha256(marshal.dumps(components, 2)).hexdigest()
    except ValueError:
        return None


class BuildLog:
    def __init__(self, path: Path, lock: Path, warn=None):
        self.path = Path(path)
        self.lock = Path(lock)
        self.warn = warn or (lambda text: None)
        self._sections: dict[str, dict] | None = None  # read on first use
        self._learned: dict[str, dict] = {s: {} for s in SECTIONS}
        self._used: dict[str, set] = {s: set() for s in SECTIONS}
        self._dropped: dict[str, set] = {s: set() for s in SECTIONS}
        self._checked: set[str] = set()  # keys whose logged record passed record_problem this run

    # -- reading -----------------------------------------------------------------------------

    def _all(self) -> dict[str, dict]:
        if self._sections is None:
            self._sections = self._read() or {s: {} for s in SECTIONS}
        return self._sections

    def _read(self) -> dict[str, dict] | None:
        try:
            data = read_record(self.path, 1 << 30)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self.warn(f"cannot read the build log {self.path} ({exc.strerror}); ignoring it")
            return None
        head, _, body = data.partition(b"\n")
        parts = head.decode("ascii", "replace").rsplit(" ", 1)
        if len(parts) != 2 or parts[0] != FORMAT:
            return None  # another trtbuild's format: rewritten by this run
        if hashlib.sha256(body).hexdigest() != parts[1]:
            self.warn(f"the build log {self.path} does not match its checksum (cut short or edited?); ignoring it")
            return None
        try:
            sections = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply (not what trtbuild writes)
            return None
        if not isinstance(sections, dict):
            self.warn(f"the build log {self.path} is not what trtbuild writes; ignoring it")
            return None
        if not all(isinstance(sections.get(s), dict) for s in SECTIONS):
            return None  # written by a trtbuild with other sections: rewritten by this run
        return {s: sections[s] for s in SECTIONS}

    def _entry(self, section: str, name: str, st: os.stat_result | None):
        """The logged value for `name` when its file still has the logged stat, else None (and the stale
        entry goes at the next save)."""
        entry = self._learned[section].get(name) or self._all()[section].get(name)
        if not (isinstance(entry, list) and len(entry) == 2):
            return None
        if st is None or entry[0] != signature(st):
            self._dropped[section].add(name)
            return None
        self._used[section].add(name)
        return entry[1]

    def _learn(self, section: str, name: str, st: os.stat_result | None, value) -> None:
        if st is not None and settled(st):
            self._learned[section][name] = [signature(st), value]
            self._dropped[section].discard(name)

    # -- what it stands for ------------------------------------------------------------------

    def record(self, key: str, st: os.stat_result | None) -> dict | None:
        """The action record stored under `key`, as it was read when its file had the stat `st`."""
        record = self._entry("records", key, st)
        if record is None:
            return None
        if key not in self._checked and record_problem(record, key):  # read back: checked as the file would be
            self._dropped["records"].add(key)
            return None
        self._checked.add(key)  # once per run (recipes sharing a model share its records)
        return record

    def learn_record(self, key: str, st: os.stat_result, record: dict) -> None:
        self._learn("records", key, st, record)

    def state(self, recipe: str, path: str) -> dict[str, list] | None:
        """{step id: [key, status]} of the recipe's state file, as it was when it had this stat."""
        found = self._entry("states", recipe, stat_or_none(path))
        if not isinstance(found, dict) or not all(
                isinstance(v, list) and len(v) == 2 and is_key(v[0]) and isinstance(v[1], str) for v in found.values()):
            return None
        return found

    def learn_state(self, recipe: str, st: os.stat_result, state: dict) -> None:
        self._learn("states", recipe, st, {sid: [e["key"], e["status"]] for sid, e in state.items()})

    def manifest(self, recipe: str, path: str) -> dict | None:
        """The out/ manifest at `path` (through out/<recipe>), as it was when it had this stat."""
        found = self._entry("shown", recipe, stat_or_none(path))
        return found if isinstance(found, dict) else None

    def learn_manifest(self, recipe: str, st: os.stat_result, manifest: dict) -> None:
        self._learn("shown", recipe, st, manifest)

    def recipe(self, file: str, st: os.stat_result | None, validator: str) -> tuple[str, str] | None:
        """(record key, record text) of the validated recipe `file`, as read when it had the stat `st`
        and validated by the same code (trtbuild.recipes.records)."""
        found = self._entry("recipes", file, st)
        if (isinstance(found, list) and len(found) == 3 and found[0] == validator and is_key(found[1])
                and isinstance(found[2], str)):
            return found[1], found[2]
        return None

    def learn_recipe(self, file: str, st: os.stat_result | None, validator: str, key: str, text: str) -> None:
        self._learn("recipes", file, st, [validator, key, text])

    def key(self, digest: str) -> str | None:
        """The step key of the key components with this digest (components_digest)."""
        entry = self._learned["keys"].get(digest) or self._all()["keys"].get(digest)
        if not (isinstance(entry, list) and len(entry) == 2 and is_key(entry[1])):
            return None
        self._used["keys"].add(digest)
        return entry[1]

    def learn_key(self, digest: str, key: str) -> None:
        self._learned["keys"][digest] = [None, key]

    # -- writing -----------------------------------------------------------------------------

    def save(self) -> None:
        """Merge what this run learned into the log on disk (concurrent runs may have saved meanwhile),
        under a lock, in one atomic write; nothing when nothing changed. A cache this user cannot write
        to keeps the log it has."""
        if not any(self._learned.values()) and not any(self._dropped.values()):
            return
        from filelock import FileLock

        try:
            self.lock.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.lock)):
                sections = self._read() or {s: {} for s in SECTIONS}
                for section, entries in sections.items():
                    for name in self._dropped[section]:
                        entries.pop(name, None)
                    for name in self._used[section]:  # used this run: kept longest
                        if name in entries:
                            entries[name] = entries.pop(name)
                    for name, entry in self._learned[section].items():
                        entries.pop(name, None)
                        entries[name] = entry
                    for name in list(entries)[:max(0, len(entries) - _LIMIT)]:
                        del entries[name]
                body = json.dumps(sections, separators=(",", ":"), ensure_ascii=False).encode()
                atomic_write(self.path, f"{FORMAT} {hashlib.sha256(body).hexdigest()}\n".encode() + body,
                             over_folder=True)
        except OSError:
            return
        self._sections = sections
        for section in SECTIONS:
            self._learned[section].clear()
            self._dropped[section].clear()

