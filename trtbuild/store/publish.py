"""out/<recipe>/: what the recipe's last build made, all of it current, swapped in at once.

Each publish writes a fresh directory `out/.<recipe>.<id>/` of copies (never hard links into
objects/, so editing a published file cannot reach the store) with a manifest of what it holds,
then points the symlink `out/<recipe>` at it in one rename. A reader sees the old build or the
new one, never a model.plan from one build beside a model.json from another, and nothing a
build no longer makes lingers. When the manifest, the digests and the copies' stats all match,
a publish does nothing (a no-op build writes nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

from filelock import FileLock

from trtbuild.store.fsutil import atomic_write
from trtbuild.store.hashing import canonical_json, stat_signature

MANIFEST = ".trtbuild-build.json"


def publish_recipe(cache, recipe: str, files: dict[str, dict], steps: dict[str, dict]) -> None:
    """Make out/<recipe>/ hold exactly `files` (path relative to it -> {"digest", "size"}).
    `steps` (step id -> status and key) goes into the manifest, so readers can tell what is current."""
    link = cache.out / recipe
    # A no-op build finds nothing to do without the lock: the link swaps in one rename, so a check
    # that races a publish reads "not intact" and waits for the lock below.
    if _intact(link, files, steps):
        return
    with FileLock(str(cache.locks_dir() / f"publish-{recipe}.lock")):
        if _intact(link, files, steps):
            return
        version = cache.out / f".{recipe}.{uuid.uuid4().hex[:12]}"
        try:
            manifest = {"files": {}, "steps": steps}
            for rel, obj in sorted(files.items()):
                dest = version / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cache.object_path(obj["digest"]), dest)
                manifest["files"][rel] = {"digest": obj["digest"], "stat": stat_signature(dest)}
            atomic_write(version / MANIFEST, canonical_json(manifest))
            _swap(link, version)
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise


def read_manifest(folder: Path) -> dict | None:
    """The manifest of the build out/<recipe>/ shows; None for no build (or an older trtbuild's out/)."""
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _intact(link: Path, files: dict[str, dict], steps: dict[str, dict]) -> bool:
    manifest = read_manifest(link)
    if manifest is None or manifest.get("steps") != steps:
        return False
    shown = manifest["files"]
    if {rel: f["digest"] for rel, f in shown.items()} != {rel: o["digest"] for rel, o in files.items()}:
        return False
    try:  # an edited copy (its mtime or ctime moved) is replaced by a fresh one
        return all(stat_signature(link / rel) == f["stat"] for rel, f in shown.items())
    except OSError:
        return False


def _swap(link: Path, version: Path) -> None:
    """Point `link` at `version` in one rename; remove what it pointed at before."""
    old = link.resolve() if link.is_symlink() else None
    if link.exists() and not link.is_symlink():  # a real directory left by an older trtbuild
        retired = link.with_name(f".{link.name}.old-{uuid.uuid4().hex[:12]}")
        os.replace(link, retired)
        old = retired
    tmp = link.with_name(f".{link.name}.link-{uuid.uuid4().hex[:12]}")
    os.symlink(version.name, tmp)
    os.replace(tmp, link)
    if old is not None and old.parent == link.parent and old.name.startswith("."):
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
