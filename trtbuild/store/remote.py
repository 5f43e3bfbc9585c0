"""A shared remote cache over fsspec (file://, s3://, gs://, ...): the same objects/ and actions/
layout as the local cache. Steps are pulled by key before building and pushed after.

A remote that is down or refuses access never fails a build: the first error turns the remote
off for the rest of the run, with a warning, and steps build locally.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import threading
import uuid

from trtbuild.store.cache import Cache
from trtbuild.errors import UsageError
from trtbuild.store.hashing import canonical_json, digest_file

# What a remote record may name: a file in the step's output folder, an object by its SHA-256.
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_PUSH_GRACE = 3600  # seconds: gc leaves younger remote objects alone (their record may be on its way)


def open_remote(url: str | None, warn) -> "Remote | None":
    """The --remote cache, or None when no URL is given."""
    if not url:
        return None
    try:
        return Remote(url, warn)
    except ImportError as exc:
        raise UsageError(f"--remote {url}: {exc}; pip install 'trtbuild[remote]'") from None


class Remote:
    def __init__(self, url: str, warn):
        import fsspec

        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._local = "file" in protocols  # object stores have no directories (and makedirs makes buckets)
        self._warn = warn
        self._lock = threading.Lock()
        self.enabled = True

    def lookup(self, key: str) -> dict | None:
        """The action record for `key` if the remote has it (its objects are not fetched)."""
        if not self.enabled:
            return None
        try:
            if not self._readable(self._action(key)):
                self._warn(f"remote record of step {key[:12]} is not a regular file; building locally")
                return None
            data = self.fs.cat_file(self._action(key))
        except FileNotFoundError:
            return None
        except Exception as exc:  # see pull()
            self._disable(exc)
            return None
        # Anyone who can write to the bucket writes these: untrusted input, checked before any use.
        try:
            record = json.loads(data)
            problem = record_problem(record, key)
        except ValueError:
            problem = "not JSON"
        if problem:
            self._warn(f"remote record of step {key[:12]} rejected ({problem}); building locally")
            return None
        return record

    def pull(self, key: str, cache: Cache) -> dict | None:
        """Fetch the action record for `key` and its objects into `cache`; None if absent or unusable."""
        record = self.lookup(key)
        if record is None:
            return None
        try:
            workdir = cache.workdir("pull")
            try:
                for name, obj in record["outputs"].items():
                    if cache.object_path(obj["digest"]).exists():
                        continue
                    if not self.get_object(obj["digest"], workdir / name):
                        self._warn(f"remote object {name} of step {key[:12]} does not match its digest; building locally")
                        return None
                    cache.ingest(workdir / name)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            cache.put_action(key, record)
            return record
        except Exception as exc:  # any remote failure (network, auth, bad data) means: build locally
            self._disable(exc)
            return None

    def share(self, key: str, record: dict, cache: Cache) -> None:
        """Push a local hit the remote lacks (built while the remote was down, or before --remote was
        used). A marker in the local cache remembers what this remote has, so a no-op build asks nothing."""
        if not self.enabled:
            return
        marker = cache.root / "remotes" / hashlib.sha256(self.url.encode()).hexdigest()[:16] / key[:2] / key
        if marker.exists():
            return
        try:
            present = self.fs.exists(self._action(key))
        except Exception as exc:
            self._disable(exc)
            return
        if not present:
            self.push(key, record, cache)
        if self.enabled:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()

    def push(self, key: str, record: dict, cache: Cache) -> None:
        """Upload the step's objects, then its action record (last, so a reader never sees a partial step)."""
        if not self.enabled:
            return
        try:
            for obj in record["outputs"].values():
                self.put_object(cache.object_path(obj["digest"]), obj["digest"])
            path = self._action(key)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            self._makedirs(path)
            self.fs.pipe_file(tmp, canonical_json(record))
            self.fs.mv(tmp, path)
        except Exception as exc:  # see pull()
            self._disable(exc)

    def put_object(self, file, digest: str) -> None:
        """Upload `file` (whose SHA-256 is `digest`) unless the remote has it. Errors propagate."""
        path = self._object(digest)
        if not self.fs.exists(path):
            self._upload(str(file), path)

    def get_object(self, digest: str, dest) -> bool:
        """Download object `digest` to `dest`; False (and `dest` removed) when the bytes do not match it."""
        if not self._readable(self._object(digest)):
            return False
        self.fs.get_file(self._object(digest), str(dest))
        if digest_file(dest) == digest:
            return True
        os.unlink(dest)
        return False

    def gc(self, policy, protected: set[str], dry_run: bool, now: float) -> dict:
        """trtbuild gc on the remote: retire records as `policy` says (never `protected` keys), then delete
        objects no record names. Objects and temp files younger than an hour are left alone: another
        machine may be pushing a step whose record is not written yet. Errors propagate."""
        from trtbuild.store.retention import retire

        actions = []
        for path, info in self.fs.find(f"{self.root}/actions", detail=True).items():
            key = path.rsplit("/", 1)[1].removesuffix(".json")
            try:
                record = json.loads(self.fs.cat_file(path))
            except (ValueError, FileNotFoundError):
                continue
            if path.endswith(".json") and not record_problem(record, key):  # others name nothing: not kept alive
                actions.append((path, record, _modified(info)))
        objects = {path: info for path, info in self.fs.find(f"{self.root}/objects", detail=True).items()}
        sizes = {path.rsplit("/", 1)[1]: info["size"] for path, info in objects.items()}
        retired = retire(actions, protected, sizes, policy, now) if not policy.empty else []
        gone = set(retired)
        live = {o["digest"] for path, record, _ in actions if path not in gone for o in record["outputs"].values()}
        dead = [path for path, info in objects.items()
                if path.rsplit("/", 1)[1] not in live and now - _modified(info) > _PUSH_GRACE]
        if not dry_run:
            for path in [*retired, *dead]:
                self.fs.rm_file(path)
        return {"retired_actions": len(retired), "removed_objects": len(dead),
                "freed_bytes": sum(objects[p]["size"] for p in dead), "kept_objects": len(live), "dry_run": dry_run}

    def _upload(self, local: str, path: str) -> None:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        self._makedirs(path)
        self.fs.put_file(local, tmp)
        self.fs.mv(tmp, path)

    def _readable(self, path: str) -> bool:
        """Whether reading `path` ends: on a local or mounted remote, a regular file (a FIFO or a device put
        there would block the read or never end); an object store holds nothing else."""
        if not self._local:
            return True
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except FileNotFoundError:
            return True  # the read says it is missing
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
                self._warn(f"remote cache {self.url} unavailable ({type(exc).__name__}: {str(exc)[:200]}); "
                           "building locally")


def _modified(info: dict) -> float:
    """An fsspec listing entry's modification time (local: mtime; S3: LastModified; GCS: updated)."""
    stamp = info.get("mtime") or info.get("LastModified") or info.get("updated") or 0
    if isinstance(stamp, str):
        from datetime import datetime

        stamp = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)


def record_problem(record, key: str) -> str | None:
    """Why a remote action record cannot be used for `key`; None when it can."""
    if not isinstance(record, dict) or not isinstance(record.get("outputs"), dict) or not record["outputs"]:
        return "no outputs"
    if record.get("key") != key:
        return "its key is not the step's"
    for name, obj in record["outputs"].items():
        if not isinstance(name, str) or not _OUTPUT_NAME.match(name):
            return f"output name {str(name)[:40]!r} is not a plain file name"
        if not isinstance(obj, dict) or not isinstance(obj.get("digest"), str) or not _DIGEST.match(obj["digest"]):
            return f"output {name}: digest is not a SHA-256"
        if not isinstance(obj.get("size"), int) or obj["size"] < 0:
            return f"output {name}: bad size"
    return None
