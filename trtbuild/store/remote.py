"""A shared remote cache over fsspec (file://, s3://, gs://, ...): the same objects/ and actions/
layout as the local cache. Steps are pulled by key before building and pushed after.

A cache, not a switch: a missing or bad record or object is a miss for that one step, which then
builds here and is pushed back (healing the remote). Only a remote that cannot be reached (refused,
down, stalled past its timeout) is left alone for the rest of the run, with one warning. Every call
has a deadline, and a run being interrupted ends its calls at once: a stalled remote costs seconds.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
import uuid

from trtbuild.errors import UsageError
from trtbuild.store.cache import Cache
from trtbuild.store.fsutil import loads_bounded, read_record
from trtbuild.store.hashing import canonical_json, digest_file
from trtbuild.store.validate import record_problem

DEFAULT_TIMEOUT = 10.0  # seconds to connect, and between bytes read, on each remote call
_MIN_RATE = 1 << 20  # bytes/s a transfer is allowed before its deadline: size / rate on top of the timeout
_CONDEMNED = "gc/condemned.json"  # objects the last remote gc found unreferenced (see trtbuild.store.remote_gc)
_CONDEMNED_TTL = 60.0  # seconds a pusher trusts its copy of that list


class RemoteUnavailable(Exception):
    """A call that did not end in time, or was stopped because the run is ending."""


def open_remote(url: str | None, warn, timeout: float | None = None) -> "Remote | None":
    """The --remote cache, or None when no URL is given."""
    if not url:
        return None
    try:
        return Remote(url, warn, timeout)
    except ImportError as exc:
        raise UsageError(f"--remote {url}: {exc}; pip install 'trtbuild[remote]'") from None
    except ValueError as exc:  # fsspec knows no such protocol: a mistake in the command line
        raise UsageError(f"--remote {url}: {exc}; use s3://, gs://, file:// or another fsspec protocol") from None
    except Exception as exc:  # the remote refused or cannot be reached: built without it, as a failing call is
        warn(f"remote cache {url} unusable ({type(exc).__name__}: {exc}); building without it")
        return None


def remote_timeout(text: str | None) -> float:
    """--remote-timeout / TRTBUILD_REMOTE_TIMEOUT: seconds, positive and finite."""
    if text in (None, ""):
        return DEFAULT_TIMEOUT
    value = float(text)
    if not 0 < value <= 3600:
        raise ValueError(f"{text}: expected seconds between 0 and 3600")
    return value


class Remote:
    def __init__(self, url: str, warn, timeout: float | None = None):
        import fsspec

        self.url = url
        self.timeout = timeout or remote_timeout(os.environ.get("TRTBUILD_REMOTE_TIMEOUT"))
        protocol = fsspec.core.split_protocol(url)[0] or "file"
        self.fs, self.root = fsspec.core.url_to_fs(url, **_timeouts(protocol, self.timeout))
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._local = "file" in protocols  # object stores have no directories (and makedirs makes buckets)
        self._warn = warn
        self._lock = threading.Lock()
        self.enabled = True
        self.stopping = threading.Event()  # set when the run is interrupted: every call ends now
        self._bad: set[str] = set()  # objects found here not holding their digest: replaced by a push
        self._condemned: tuple[float, set[str]] = (-_CONDEMNED_TTL, set())

    # -- steps -------------------------------------------------------------------------------

    def lookup(self, key: str) -> dict | None:
        """The action record for `key` if the remote has a usable one (its objects are not fetched)."""
        if not self.enabled:
            return None
        try:
            data = self._call(self._read, self._action(key))
        except FileNotFoundError:
            return None
        except Exception as exc:
            self._disable(exc)
            return None
        if data is None:
            self._warn(f"remote record of step {key[:12]} is not a regular file; building locally")
            return None
        # Anyone who can write to the bucket writes these: untrusted input, checked before any use.
        try:
            record = loads_bounded(data)
        except ValueError:
            record = None
        problem = record_problem(record, key) if record is not None else "not JSON"
        if problem:
            self._warn(f"remote record of step {key[:12]} rejected ({problem}); building locally")
            return None
        return record

    def pull(self, key: str, cache: Cache) -> dict | None:
        """Fetch the action record for `key` and its objects into `cache`; None if absent or unusable.
        A missing or bad object is a miss for this step only: it builds here, and its push heals the remote."""
        record = self.lookup(key)
        if record is None:
            return None
        workdir = cache.workdir("pull")
        try:
            for name, obj in record["outputs"].items():
                if cache.verified(obj["digest"]):
                    continue
                try:
                    ok = self.get_object(obj["digest"], workdir / name, obj["size"])
                except FileNotFoundError:
                    self._warn(f"remote object {name} of step {key[:12]} is missing; building locally")
                    return None
                if not ok:
                    self._bad.add(obj["digest"])
                    self._warn(f"remote object {name} of step {key[:12]} does not match its digest; building locally")
                    return None
                cache.ingest(workdir / name)
            cache.put_action(key, record)
        except Exception as exc:  # any other failure (network, auth, a stall): build locally
            self._disable(exc)
            return None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self._note_used(key)
        return record

    def share(self, key: str, record: dict, cache: Cache, replace: bool = False) -> None:
        """Make the remote hold this step: push it when the remote lacks its record, holds a bad one, or
        lacks (or holds a bad copy of) any object its record names. `replace` (--force): push ours over
        whatever is there. A marker in the local cache remembers what this remote had, so a no-op build
        asks nothing."""
        if not self.enabled:
            return
        marker = cache.root / "remotes" / _digest(self.url)[:16] / key[:2] / key
        if not replace and marker.exists():
            return
        try:
            if replace or not self._holds(key):
                self.push(key, record, cache)
        except Exception as exc:
            self._disable(exc)
        if self.enabled:
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
            except OSError:  # a read-only cache: asked again next time
                pass

    def push(self, key: str, record: dict, cache: Cache) -> None:
        """Upload the step's objects the remote lacks, then its action record (last, so a reader never
        sees a partial step), then check its objects are still there (a gc sweeping meanwhile). Objects
        the last remote gc condemned are uploaded again: their new date keeps its sweep off them."""
        condemned = self._condemned_now()
        for _ in range(2):
            for obj in record["outputs"].values():
                digest = obj["digest"]
                self.put_object(cache.object_path(digest), digest, again=digest in self._bad or digest in condemned)
                self._bad.discard(digest)
            self._write(self._action(key), canonical_json(record))
            if all(self._call(self.fs.exists, self._object(o["digest"])) for o in record["outputs"].values()):
                return
            condemned = {o["digest"] for o in record["outputs"].values()}

    def put_object(self, file, digest: str, again: bool = False) -> None:
        """Upload `file` (whose SHA-256 is `digest`) unless the remote has it. Errors propagate."""
        path = self._object(digest)
        if again or not self._call(self.fs.exists, path):
            self._upload(str(file), path, os.path.getsize(file))

    def get_object(self, digest: str, dest, size: int = 0) -> bool:
        """Download object `digest` to `dest`; False (and `dest` removed) when the bytes do not match it
        or it is not a regular file. A missing object raises FileNotFoundError; other errors propagate."""
        if not self._regular(self._object(digest)):
            return False
        self._call(self.fs.get_file, self._object(digest), str(dest), size=size)
        if digest_file(dest) == digest:
            return True
        os.unlink(dest)
        return False

    def gc(self, policy, protected: set[str], dry_run: bool, now: float, grace: float = 3600.0) -> dict:
        from trtbuild.store.remote_gc import collect

        return collect(self, policy, protected, dry_run, grace)

    # -- calls with deadlines -------------------------------------------------------------------

    def _call(self, fn, *args, size: int = 0, **kwargs):
        """fn(*args, **kwargs) on a thread of its own, waited for until its deadline (the timeout, three times over
        for retries, plus size at 1 MiB/s) or until the run stops; either raises RemoteUnavailable and
        leaves the thread to its socket timeouts (a daemon: it never holds the process)."""
        if self.stopping.is_set():
            raise RemoteUnavailable("the run is stopping")
        box: dict = {}
        done = threading.Event()

        def call():
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc
            done.set()

        threading.Thread(target=call, daemon=True, name="trtbuild-remote").start()
        allowed = 3 * self.timeout + size / _MIN_RATE
        deadline = time.monotonic() + allowed
        while not done.wait(0.1):
            if self.stopping.is_set():
                raise RemoteUnavailable("the run is stopping")
            if time.monotonic() > deadline:
                raise RemoteUnavailable(f"no answer within {allowed:.0f} s")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _read(self, path: str) -> bytes | None:
        """A record's bytes (at most 64 MiB); None when it is not a regular file (a mounted remote)."""
        if self._local:
            try:
                return read_record(path)
            except FileNotFoundError:
                raise
            except OSError:
                return None
        data = self.fs.cat_file(path, start=0, end=64 << 20)
        return data

    def _write(self, path: str, data: bytes) -> None:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        self._makedirs(path)
        self._call(self.fs.pipe_file, tmp, data)
        self._call(self.fs.mv, tmp, path)

    def _upload(self, local: str, path: str, size: int) -> None:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        self._makedirs(path)
        self._call(self.fs.put_file, local, tmp, size=size)
        self._call(self.fs.mv, tmp, path, size=size)

    def _holds(self, key: str) -> bool:
        """Whether the remote holds a usable record for `key` and every object it names."""
        try:
            data = self._call(self._read, self._action(key))
            record = loads_bounded(data) if data is not None else None
        except FileNotFoundError:
            return False
        except ValueError:
            return False
        if record_problem(record, key):
            return False
        digests = {o["digest"] for o in record["outputs"].values()}
        return not digests & self._bad and all(self._call(self.fs.exists, self._object(d)) for d in digests)

    def _note_used(self, key: str) -> None:
        """A pull is a use: used/<key> is rewritten, and the remote's own clock dates it (gc --older-than)."""
        try:
            self._write(f"{self.root}/used/{key[:2]}/{key}", b"")
        except Exception:  # a read-only bucket: the record is dated by its push
            pass

    def _condemned_now(self) -> set[str]:
        stamp, digests = self._condemned
        if time.monotonic() - stamp < _CONDEMNED_TTL:
            return digests
        try:
            data = loads_bounded(self._call(self.fs.cat_file, f"{self.root}/{_CONDEMNED}"))
            digests = {d for d in data.get("objects", []) if isinstance(d, str)} if isinstance(data, dict) else set()
        except FileNotFoundError:
            digests = set()
        except ValueError:
            digests = set()
        self._condemned = (time.monotonic(), digests)
        return digests

    def _regular(self, path: str) -> bool:
        """Whether reading `path` ends: on a local or mounted remote, a regular file (a FIFO or a device put
        there would block the read or never end); an object store holds nothing else."""
        if not self._local:
            return True
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except FileNotFoundError:
            raise
        except OSError:
            return False

    def _makedirs(self, path: str) -> None:
        if self._local:
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)

    def _object(self, digest: str) -> str:
        return f"{self.root}/objects/{digest[:2]}/{digest}"

    def _action(self, key: str) -> str:
        return f"{self.root}/actions/{key[:2]}/{key}.json"

    def _disable(self, exc: Exception) -> None:
        with self._lock:
            if self.enabled:
                self.enabled = False
                if not self.stopping.is_set():
                    self._warn(f"remote cache {self.url} unavailable ({type(exc).__name__}: {str(exc)[:200]}); "
                               "building locally")


def _timeouts(protocol: str, seconds: float) -> dict:
    """fsspec options bounding how long one request may wait (connect, and between bytes read)."""
    if protocol in ("s3", "s3a"):  # on top of any config_kwargs the user set in fsspec's configuration
        import fsspec

        configured = dict(fsspec.config.conf.get(protocol, {}).get("config_kwargs") or {})
        return {"config_kwargs": configured | {"connect_timeout": seconds, "read_timeout": seconds,
                                               "retries": {"max_attempts": 2, "mode": "standard"}}}
    if protocol in ("gs", "gcs"):
        return {"timeout": seconds}
    if protocol in ("http", "https"):
        return {"client_kwargs": {"timeout": _aiohttp_timeout(seconds)}}
    return {}


def _aiohttp_timeout(seconds: float):
    import aiohttp

    return aiohttp.ClientTimeout(sock_connect=seconds, sock_read=seconds)


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
