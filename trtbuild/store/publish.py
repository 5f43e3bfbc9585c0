"""out/<recipe>/: the current outputs of the recipe's steps, all of them, swapped in at once.

What it holds is chosen by the run (trtbuild.execution.shown): for every step of the recipe and
every target it lists (plus those a run was asked for), the outputs of the step's current key when
the cache has them, whatever subset the last run built. Each publish writes a fresh directory
`out/.<recipe>.<id>/` of copies (reflinks on XFS / Btrfs, which cost no second copy on disk; never
hard links into objects/, so editing a published file cannot reach the store) with a manifest of
what it holds, then points the symlink `out/<recipe>` at it in one rename and removes the build it
replaced. A reader sees the old build or the new one, never a
model.plan from one build beside a model.json from another; paths through the link
(`out/<recipe>/<target>/model.plan`) stay valid across publishes. When the manifest, the digests and
the copies' stats all match, a publish does nothing (a no-op build writes nothing).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from trtbuild.store.fsutil import atomic_write, copy_file, read_json, read_json_stat
from trtbuild.store.hashing import canonical_json, stat_signature

MANIFEST = ".trtbuild-build.json"


def publish_recipe(cache, recipe: str, files: dict[str, dict], steps: dict[str, dict],
                   source: str | None = None) -> str | None:
    """Make out/<recipe>/ hold exactly `files` (path relative to it -> {"digest", "size"}).
    `steps` (step id -> status and key) goes into the manifest, so readers can tell what is current, and
    so does `source`, the recipe file. Returns the other recipe file out/<recipe> was published from
    when that file is still there (two recipes of one name share out/<recipe>), else None."""
    # A no-op build finds nothing to do without the lock: the link swaps in one rename, so a check
    # that races a publish reads "not intact" and waits for the lock below. (A string: a no-op checks
    # every recipe's.)
    shown_at = os.path.join(cache.out, recipe)
    if _intact(shown_at, _shown_manifest(shown_at, getattr(cache, "log", None)), files, steps, source):
        return None
    link = cache.out / recipe
    from filelock import FileLock  # here: a no-op build publishes nothing

    with FileLock(str(cache.locks_dir() / f"publish-{recipe}.lock")):
        shown = _shown_manifest(link, None)  # read back: any JSON at all
        if _intact(link, shown, files, steps, source):
            return None
        before = shown.get("source") if isinstance(shown, dict) else None
        other = before if isinstance(before, str) and os.path.isfile(before) and not _same_source(before, source) \
            else None
        version = cache.out / f".{recipe}.{_unique()}"
        try:
            manifest = {"files": {}, "steps": steps, "source": source}
            for rel, obj in sorted(files.items()):
                dest = version / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                copy_file(cache.object_path(obj["digest"]), dest)  # a reflink where the file system has them
                manifest["files"][rel] = {"digest": obj["digest"], "stat": stat_signature(dest)}
            atomic_write(version / MANIFEST, canonical_json(manifest), over_folder=True)
        except BaseException:  # a full disk, a signal: out/<recipe> still shows the previous build
            shutil.rmtree(version, ignore_errors=True)
            raise
        _swap(link, version)
        _remove_unshown(link)
    return other


def _unique() -> str:
    import uuid  # here: a no-op build publishes nothing

    return uuid.uuid4().hex[:12]


def read_manifest(folder: Path) -> dict | None:
    """The manifest of the build out/<recipe>/ shows; None for no build (or an older trtbuild's out/)."""
    try:
        return read_json(folder / MANIFEST)
    except (OSError, ValueError):
        return None


def _shown_manifest(link: Path | str, log) -> dict | None:
    """The manifest out/<recipe> shows, through the build log when it has the manifest's stat."""
    path = os.path.join(link, MANIFEST)
    if log is not None:
        logged = log.manifest(os.path.basename(link), path)
        if logged is not None:
            return logged
    try:
        manifest, st = read_json_stat(path)
    except (OSError, ValueError):
        return None
    if log is not None and isinstance(manifest, dict):
        log.learn_manifest(os.path.basename(link), st, manifest)
    return manifest


def _intact(link: Path | str, manifest, files: dict[str, dict], steps: dict[str, dict], source: str | None) -> bool:
    """Whether out/<recipe> (showing `manifest`, as read back) holds exactly these files, steps and source."""
    if not isinstance(manifest, dict) or manifest.get("steps") != steps or not isinstance(manifest.get("files"), dict) \
            or not _same_source(manifest.get("source"), source):
        return False
    shown = manifest["files"]
    if shown.keys() != files.keys():
        return False
    try:
        for rel, f in shown.items():
            if f["digest"] != files[rel]["digest"]:
                return False
        # an edited copy (its mtime or ctime moved) is replaced by a fresh one
        for rel, f in shown.items():
            if stat_signature(os.path.join(link, rel)) != f["stat"]:
                return False
        return True
    except (OSError, TypeError, KeyError):  # a file gone; a manifest not as written: published afresh
        return False


def _same_source(shown, source: str | None) -> bool:
    """The recipe file a manifest names is `source` (however spelt: links, another working directory)."""
    if shown == source or source is None:
        return True
    try:
        return isinstance(shown, str) and os.path.samefile(shown, source)
    except OSError:
        return False


def _swap(link: Path, version: Path) -> None:
    """Point `link` at `version` in one rename. What it pointed at before is removed at once: readers
    (trtbuild.commands.deploy) give stable paths through the link, and read a build again when it moved."""
    if link.exists() and not link.is_symlink():  # a real directory left by an older trtbuild
        os.replace(link, link.with_name(f".{link.name}.{_unique()}"))
    tmp = link.with_name(f".{link.name}.link-{_unique()}")
    os.symlink(version.name, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_unshown(link: Path) -> None:
    """Remove the recipe's build folders the link does not point at: the one just replaced, and any a
    killed publish left (the caller holds the recipe's publish lock)."""
    shown = os.readlink(link)
    pattern = re.compile(rf"\.{re.escape(link.name)}\.(link-)?[0-9a-f]{{12}}")
    for entry in os.scandir(link.parent):
        if entry.name != shown and pattern.fullmatch(entry.name):
            with contextlib.suppress(OSError):
                if entry.is_symlink() or not entry.is_dir():
                    os.unlink(entry.path)
                else:
                    shutil.rmtree(entry.path)
