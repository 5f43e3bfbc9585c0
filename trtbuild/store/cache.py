"""Content-addressed artifact store, action records, per-recipe state and locks (gc: trtbuild.store.collect).

Layout under the cache root:

    objects/ab/<sha256>        immutable artifacts, named by their content digest
    actions/ab/<key>.json      step key -> output digests (written last: the commit point)
    state/<recipe>.json        the last key and key components of each step ("why did it rebuild?")
    users/<uid>/               what only its user writes (mode 0700, trtbuild.store.private):
        buildlog/<scope>       what a no-op build reads instead of the files above (trtbuild.store.buildlog)
        recipes/<key>.json     recipe files validated before (trtbuild.recipes.records)
        versions.json, gpus.json   installed tools' versions, NVML's last answer
    out/<recipe>/...           stable, human-facing links to the current outputs
    locks/, tmp/, logs/, timing/

Nothing here knows about TensorRT or ONNX.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from collections.abc import Iterator

from trtbuild.store import code, versions
from trtbuild.store.buildlog import BuildLog, stat_or_none
from trtbuild.store.fsutil import (atomic_write, fsync_file, no_links, open_lock, publish_copy, publish_link, read_json,
                                   read_json_stat, remove_any, replace, share_with_group)
from trtbuild.store.hashing import StatCache, canonical_json, digest_written
from trtbuild.store.private import user_folder
from trtbuild.store.validate import record_inconsistent, record_problem, state_entries

_FOLDERS = ("objects", "actions", "state", "out", "locks", "tmp", "logs", "timing", "users", "code", "remotes")
_USE_RESOLUTION = 86400  # seconds: how finely a record's last use is kept


def _warn(text: str) -> None:
    import sys

    print(f"trtbuild: warning: {text}", file=sys.stderr)


class Cache:
    def __init__(self, root: str | os.PathLike, warn=None, make: bool = False):
        """`make`: create the cache if missing (a build); a command that only reads it creates nothing."""
        self.root = Path(root).resolve()
        if os.path.exists(self.root) and not os.path.isdir(self.root):  # a file, /dev/null, a FIFO
            from trtbuild.errors import UsageError

            raise UsageError(f"--cache-dir {root}: not a folder; name a folder (it is made if missing)")
        self.warn = warn or _warn  # corrupt objects found, unreadable records
        self.objects = self.root / "objects"
        self._objects = str(self.objects)
        self.actions = self.root / "actions"
        self.state_dir = self.root / "state"
        self.out = self.root / "out"
        self.locks = self.root / "locks"
        self.tmp = self.root / "tmp"
        self.logs = self.root / "logs"
        self.timing = self.root / "timing"
        share_with_group(self.root)  # a setgid cache directory: files group-writable whatever the umask
        no_links(self.root, _FOLDERS, self.warn)
        self.mine = user_folder(self.root, self.warn, make or os.path.isdir(self.root))  # None: a read-only cache, or not this user's alone
        self.recipes = self.mine / "recipes" if self.mine else None
        self._stat_cache: StatCache | None = None
        self.log: BuildLog | None = None  # see keep_log
        self._record_mtimes: dict[str, float] = {}  # action records read through the log: their mtime
        code.keep_index_in(self.root / "code")  # trtbuild's own code facts, per version of its sources
        versions.keep_in(self.mine and self.mine / "versions.json")  # tools' versions, per sys.path state
        self._have_locks = False
        self._real_folders: set[str] = set()  # objects/ab/ folders checked this run (not links)
        # Action records read this run, (key, outputs asked) -> record: recipes sharing a step (one model,
        # many engines) read its record once; its objects are verified at every hit. Forgotten when the
        # record is written or a hit fails; a Cache lives for one command.
        self._records: dict[tuple, dict] = {}
        self._noted: set[str] = set()  # keys whose use note_used has dated this run

    def keep_log(self, scope: list[str]) -> BuildLog | None:
        """Read records, states and out/ manifests through a build log (a build: one file instead of
        several per step); saved by save_log. `scope`: what the build was asked for (its recipe paths,
        its targets): each scope has its own log, as each ninja build directory has, so that building
        one recipe never reads the log of a thousand. Kept in this user's folder: none without one."""
        if self.log is None and self.mine is not None:
            name = hashlib.sha256(json.dumps(scope).encode()).hexdigest()[:32]
            self.log = BuildLog(self.mine / "buildlog" / name, self.mine / "buildlog" / f"{name}.lock",
                                lambda text: self.warn(text))
        return self.log

    def save_log(self) -> None:
        if self.log is not None:
            self.log.save()

    # -- artifacts -------------------------------------------------------------------------

    def object_path(self, digest: str) -> Path:
        return self.objects.joinpath(digest[:2], digest)  # one join: a no-op build makes thousands

    def ingest(self, file: Path, written: dict | None = None) -> tuple[str, int]:
        """Move a finished file (on the cache's filesystem) into the store; return (digest, size).
        `written`: the digest and stat write_hashed noted as it wrote the file, taken while the file's
        stat is unchanged. An object already there is kept only if it still holds its bytes."""
        digest, durable = digest_written(file, written)
        size = file.stat().st_size
        dest = self.object_path(digest)
        if self.verified(digest):
            file.unlink()
        else:
            if not durable:
                fsync_file(file)
            file.chmod(0o444)
            dest.parent.mkdir(parents=True, exist_ok=True)
            replace(file, dest)
            self.stat_cache.remember(dest, "sha256", digest)  # what later hits check against
        return digest, size

    def verified(self, digest: str, size: int | None = None, key: str = "") -> bool:
        """Whether objects/<digest> exists (with `size` bytes, the size a record says) and holds those bytes.
        Its stat is compared with the one recorded at ingest; a file whose stat moved (an edit, even as root) is re-hashed, and one whose
        bytes no longer match is reported and removed, so it is rebuilt or pulled, never served."""
        path = f"{self._objects}/{digest[:2]}/{digest}"  # a string: every hit checks its objects
        if digest[:2] not in self._real_folders:  # objects/ab/ a link: removed, never followed
            no_links(self.objects, [digest[:2]], self.warn)
            self._real_folders.add(digest[:2])
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read, a link lead elsewhere
                self.warn(f"cache object {path} is not a regular file; removed, rebuilding")
                remove_any(path)
                return False
            if size is not None and st.st_size != size:  # the record is wrong, not the object
                self.warn(f"cache record of step {key[:12]} says {size} bytes for object {digest[:12]}, which has "
                          f"{st.st_size}; rebuilding the step")
                return False
            actual = self.stat_cache.digest(path, st)
        except FileNotFoundError:
            return False
        except OSError as exc:  # another user's unreadable object: a miss, not a traceback
            self.warn(f"cannot read cache object {path}: {exc.strerror}; rebuilding it")
            return False
        if actual == digest:
            return True
        self.warn(f"cache object {path} does not hold the bytes it is named after (edited in place?); "
                  "removed, rebuilding")
        with contextlib.suppress(OSError):
            os.unlink(path)
        return False

    # -- action records --------------------------------------------------------------------

    def _action_path(self, key: str) -> Path:
        return self.actions.joinpath(key[:2], f"{key}.json")

    def get_action(self, key: str, outputs: tuple | None = None) -> dict | None:
        """The record for `key` if it is well formed, consistent with its step (its key components hash to
        `key`; with `outputs`, see validate.record_inconsistent, it names exactly its kind's outputs), and every
        object it names exists with the size it says and holds its bytes. Any other record (edited, copied
        over another key's, cut short) is a miss with a warning: the step runs again and its new record
        replaces it."""
        record = self._records.get((key, outputs)) or self.read_action(key, outputs)
        if record is not None and all(self.verified(o["digest"], o["size"], key) for o in record["outputs"].values()):
            self._records[(key, outputs)] = record
            return record
        self._records.pop((key, outputs), None)
        return None

    def read_action(self, key: str, outputs: tuple | None = None) -> dict | None:
        """The record stored under `key` when it is usable (its objects unchecked), else None (warned). A
        record read through the build log (this user's own) was checked when it was logged."""
        path = os.path.join(self.actions, key[:2], f"{key}.json")  # a string: every hit reads one
        if self.log is not None:
            st = stat_or_none(path)
            logged = self.log.record(key, st)
            if logged is not None:
                self._record_mtimes[key] = st.st_mtime  # what note_used asks next
                return logged
        st = None
        try:
            record, st = read_json_stat(path)
        except FileNotFoundError:
            return None
        except ValueError:
            record = None
        except OSError as exc:
            self.warn(f"cannot read cache record {path}: {exc.strerror}; rebuilding the step")
            return None
        problem = record_problem(record, key) or record_inconsistent(record, key, outputs)
        if problem:
            self.warn(f"cache record {path} rejected ({problem}); rebuilding the step")
            return None
        if self.log is not None and outputs is not None:  # checked as a hit is: the log may serve it
            self.log.learn_record(key, st, record)
        self._record_mtimes[key] = st.st_mtime
        return record

    def note_used(self, key: str) -> None:
        """A hit was served: its record's mtime says when it was last used (what gc --older-than and
        --max-size go by). At most once a day per record, so a no-op build rarely writes anything."""
        if key in self._noted:  # a step shared by many recipes: dated once
            return
        self._noted.add(key)
        mtime = self._record_mtimes.pop(key, None)  # taken when the record was read
        with contextlib.suppress(OSError):  # a read-only cache: the record stays dated by its build
            if mtime is None:
                mtime = self._action_path(key).stat().st_mtime
            if time.time() - mtime > _USE_RESOLUTION:
                os.utime(self._action_path(key))

    def put_action(self, key: str, record: dict) -> None:
        self._records = {read: r for read, r in self._records.items() if read[0] != key}
        atomic_write(self._action_path(key), canonical_json(record), over_folder=True)

    def iter_actions(self) -> Iterator[tuple[Path, dict]]:
        """(file, record) of every usable action record; malformed ones are skipped (gc deletes them)."""
        for path in self.actions.glob("*/*.json"):
            with contextlib.suppress(ValueError, OSError):
                record = read_json(path)
                if not record_problem(record, path.name.removesuffix(".json")):
                    yield path, record

    # -- per-recipe state (the build log) ----------------------------------------------------

    def read_state(self, recipe: str) -> dict:
        return self._read_state(recipe)[0]

    def _read_state(self, recipe: str) -> tuple[dict, os.stat_result | None]:
        """(usable entries, the stat of the file read when every entry was usable, else None)."""
        path = os.path.join(self.state_dir, f"{recipe}.json")
        try:
            state, st = read_json_stat(path)
        except FileNotFoundError:
            return {}, None
        except (OSError, ValueError):  # another user's unreadable one, cut short: no history
            self.warn(f"cannot read the state file {path}; ignoring it, it is rewritten by the next build")
            return {}, None
        good = state_entries(state, self.warn, path)
        return good, (st if isinstance(state, dict) and len(good) == len(state) else None)

    def state_keys(self, recipe: str) -> dict[str, list]:
        """{step id: [key, status]} of the recipe's state: what a no-op build compares with."""
        path = os.path.join(self.state_dir, f"{recipe}.json")
        if self.log is not None:
            logged = self.log.state(recipe, path)
            if logged is not None:
                return logged
        state, st = self._read_state(recipe)
        if self.log is not None and st is not None:
            self.log.learn_state(recipe, st, state)
        return {sid: [e["key"], e["status"]] for sid, e in state.items()}

    def record_state(self, recipe: str, step_id: str, entry: dict) -> None:
        """Merge one step's entry into the recipe's state under a lock (parallel steps share the file)."""
        path = self.state_dir / f"{recipe}.json"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock  # here: a no-op build writes no state

        with FileLock(self._lock_file(f"state-{recipe}.lock")):
            state = self.read_state(recipe)
            state[step_id] = entry
            atomic_write(path, canonical_json(state), over_folder=True)

    # -- a step's inputs ---------------------------------------------------------------------

    def link_into(self, dest_dir: Path, outputs: dict[str, dict], copy_data: bool = True) -> dict[str, str]:
        """Link each output under its name into `dest_dir` (a step's scratch directory; users see
        copies, see trtbuild.store.publish); skip links already in place.

        ONNX external-data files (*.onnx.data) are copied (a reflink where the file system has them):
        onnx refuses to read hard-linked ones. `copy_data=False`: linked too, for a reader that takes
        them (TensorRT's parser), which spares a copy of a large model's weights.
        """
        paths = {}
        for name, obj in outputs.items():
            dest = dest_dir / name
            src = self.object_path(obj["digest"])
            if copy_data and name.endswith(".onnx.data"):
                # The copy keeps the object's mtime: same size and mtime = already this object.
                if not dest.exists() or (dest.stat().st_size, dest.stat().st_mtime_ns) != (
                    obj["size"], src.stat().st_mtime_ns
                ):
                    publish_copy(src, dest)
            else:
                with contextlib.suppress(FileNotFoundError):
                    if os.path.samefile(src, dest):
                        paths[name] = str(dest)
                        continue
                publish_link(src, dest)
            paths[name] = str(dest)
        return paths

    # -- locks, scratch space --------------------------------------------------------------

    def locks_dir(self) -> Path:
        if not self._have_locks:  # once per run, not once per lock
            self.locks.mkdir(parents=True, exist_ok=True)
            self._have_locks = True
        return self.locks

    def _lock_file(self, name: str) -> str:
        """locks/<name>, a regular file this run may open: filelock opens with O_TRUNC, following links, so
        a link another user left there (to a file of this user's) is removed first, never followed."""
        path = str(self.locks_dir() / name)
        with contextlib.suppress(OSError):
            os.close(open_lock(path, os.O_RDWR | os.O_CREAT))
        return path

    def step_lock(self, key: str):
        from filelock import FileLock  # here: a no-op build takes no step lock

        return FileLock(self._lock_file(f"{key}.lock"))

    @contextlib.contextmanager
    def using(self, exclusive: bool = False) -> Iterator[None]:
        """Builds (and their publishing) share the cache; gc needs it alone. flock is released even on
        SIGKILL. A cache this user cannot write to (a read-only CI mount) is read without the lock: nothing
        is written there, and status, dag, path and a no-op build still work."""
        path = self.locks / "cache.lock"
        try:
            fd = open_lock(self.locks_dir() / "cache.lock", os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            if exclusive or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            try:
                fd = open_lock(path, os.O_RDONLY)
            except OSError:
                yield  # no lock file, and none can be made: lock-free reads
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def workdir(self, prefix: str) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        import tempfile  # here: a no-op build runs no step

        return Path(tempfile.mkdtemp(dir=self.tmp, prefix=f"{prefix}-"))

    @property
    def stat_cache(self) -> StatCache:
        if self._stat_cache is None:
            self._stat_cache = StatCache(self.root / "statcache.json")
        return self._stat_cache
