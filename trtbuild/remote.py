"""A shared remote cache over fsspec (file://, s3://, gs://, ...): the same objects/ and actions/
layout as the local cache. Steps are pulled by key before building and pushed after.

A remote that is down or refuses access never fails a build: the first error turns the remote
off for the rest of the run, with a warning, and steps build locally.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid

from trtbuild.cache import Cache
from trtbuild.hashing import canonical_json, digest_file


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
            return json.loads(self.fs.cat_file(self._action(key)))
        except FileNotFoundError:
            return None
        except Exception as exc:  # see pull()
            self._disable(exc)
            return None

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
                    self.fs.get_file(self._object(obj["digest"]), str(workdir / name))
                    if digest_file(workdir / name) != obj["digest"]:
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

    def push(self, key: str, record: dict, cache: Cache) -> None:
        """Upload the step's objects, then its action record (last, so a reader never sees a partial step)."""
        if not self.enabled:
            return
        try:
            for obj in record["outputs"].values():
                path = self._object(obj["digest"])
                if not self.fs.exists(path):
                    self._upload(str(cache.object_path(obj["digest"])), path)
            path = self._action(key)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            self._makedirs(path)
            self.fs.pipe_file(tmp, canonical_json(record))
            self.fs.mv(tmp, path)
        except Exception as exc:  # see pull()
            self._disable(exc)

    def _upload(self, local: str, path: str) -> None:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        self._makedirs(path)
        self.fs.put_file(local, tmp)
        self.fs.mv(tmp, path)

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
