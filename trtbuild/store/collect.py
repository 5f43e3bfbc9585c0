"""Garbage collection of the local cache: retire action records as a policy says (trtbuild.store.retention),
delete the objects no record names, out/ of recipes no longer built, and scratch killed runs left."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from trtbuild.store.fsutil import read_json
from trtbuild.store.validate import record_problem


def collect(cache, policy=None, dry_run: bool = False, live: set[str] | None = None,
            live_recipes: set[str] | None = None, pinned: set[tuple[str, str]] = frozenset()) -> dict:
    """Retire action records as `policy` (trtbuild.store.retention.Policy) says, then delete objects no
    record names, malformed records, and scratch left by killed runs. dry_run: say what would go, delete
    nothing. `live` (with `live_recipes`): the keys the recipes in use make now (trtbuild gc DIR): every
    other record is retired, and out/ folders and state of recipes not among `live_recipes` are removed;
    `pinned`: (recipe, step id) whose key is unknown here, of which the newest result is kept.
    Builds and their publishing hold the cache shared: gc waits for them."""
    from trtbuild.store.retention import retire

    with cache.using(exclusive=True):
        actions, malformed = [], []
        for path in cache.actions.glob("*/*.json"):
            try:
                record = read_json(path)
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                record, mtime = None, 0
            if record_problem(record, path.name.removesuffix(".json")):
                malformed.append(path)  # names nothing: keeps nothing alive
            else:
                actions.append((path, record, mtime))
        sizes = {p.name: p.stat().st_size for p in cache.objects.glob("*/*")}
        shown = _shown_bytes(cache, live_recipes)
        retired = []
        protected = current_keys(cache, live_recipes) if live is None else live
        if live is not None:
            newest: dict[tuple, tuple[float, str]] = {}
            for path, record, mtime in actions:
                which = (record.get("recipe"), record.get("step"))
                if which in pinned:
                    newest[which] = max(newest.get(which, (-1.0, "")), (min(record.get("created", mtime), mtime),
                                                                         record["key"]))
            protected = live | {key for _, key in newest.values()}
            retired = [path for path, record, _ in actions if record["key"] not in protected]
        if policy is not None and not policy.empty:
            kept = [a for a in actions if a[0] not in set(retired)]
            retired += retire(kept, protected, sizes, policy, time.time(), outside=shown)
        gone = set(retired)
        live_objects = {o["digest"] for path, record, _ in actions if path not in gone
                        for o in record["outputs"].values()}
        dead = [digest for digest in sizes if digest not in live_objects]
        stale_out = _stale_out(cache, live_recipes)
        if not dry_run:
            for path in [*retired, *malformed]:
                path.unlink(missing_ok=True)
            for digest in dead:
                cache.object_path(digest).unlink(missing_ok=True)
            for link in stale_out:
                _unpublish(cache, link)
            if live_recipes is not None:
                for state in cache.state_dir.glob("*.json"):
                    if state.stem not in live_recipes:
                        state.unlink(missing_ok=True)
            _clean_scratch(cache)
        remaining = sum(sizes[d] for d in live_objects) + shown
    stats = {"retired_actions": len(retired), "removed_objects": len(dead), "malformed_records": len(malformed),
             "freed_bytes": sum(sizes[d] for d in dead), "kept_objects": len(live_objects),
             "removed_out": sorted(link.name for link in stale_out), "kept_bytes": remaining, "dry_run": dry_run}
    if policy is not None and policy.max_size is not None and remaining > policy.max_size:
        stats["short_bytes"] = remaining - policy.max_size  # held by current builds and what out/ shows
    return stats


def current_keys(cache, recipes: set[str] | None = None) -> set[str]:
    """The keys of each recipe's last build (its state) and of what out/ shows (its manifest); with
    `recipes`, of those recipes only."""
    from trtbuild.store.publish import read_manifest

    keys = {e["key"] for state in cache.state_dir.glob("*.json") if recipes is None or state.stem in recipes
            for e in cache.read_state(state.stem).values()}
    for link in cache.out.glob("*"):
        if link.is_symlink() and (recipes is None or link.name in recipes):
            manifest = read_manifest(link)
            steps = manifest.get("steps") if isinstance(manifest, dict) else None
            if isinstance(steps, dict):
                keys |= {s.get("key") for s in steps.values() if isinstance(s, dict)}
    return {k for k in keys if isinstance(k, str)}


def _stale_out(cache, live_recipes: set[str] | None) -> list[Path]:
    """out/<recipe> links of recipes not among `live_recipes` (none when it is None)."""
    if live_recipes is None or not cache.out.is_dir():
        return []
    return [link for link in cache.out.iterdir() if not link.name.startswith(".") and link.name not in live_recipes]


def _unpublish(cache, link: Path) -> None:
    target = link.resolve() if link.is_symlink() else None
    if link.is_symlink() or link.is_file():
        link.unlink(missing_ok=True)
    elif link.is_dir():
        shutil.rmtree(link, ignore_errors=True)
    if target is not None and target.parent == cache.out and target.name.startswith("."):
        shutil.rmtree(target, ignore_errors=True)


def _shown_bytes(cache, live_recipes: set[str] | None = None) -> int:
    """Bytes besides objects/ that retiring records does not free: the builds out/ shows (copies),
    logs, timing, recipe records, state and the stat cache."""
    folders = [cache.logs, cache.timing, cache.state_dir] + ([cache.mine] if cache.mine else [])
    if cache.out.is_dir():
        shown = [link.resolve() for link in cache.out.iterdir() if link.is_symlink()
                 and (live_recipes is None or link.name in live_recipes)]
        folders += [folder for folder in shown if folder.parent == cache.out]  # never a walk outside the cache
    total = 0
    for folder in folders:
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
    with contextlib.suppress(OSError):
        total += os.lstat(cache.root / "statcache.json").st_size
    return total


def _clean_scratch(cache) -> None:
    if cache.tmp.exists():
        shutil.rmtree(cache.tmp)
    # out/.<recipe>.<id>/ folders no out/<recipe> link points at: left by a killed publish
    shown = {p.resolve() for p in cache.out.glob("*") if p.is_symlink()}
    for folder in cache.out.glob(".*"):
        if folder.is_dir() and not folder.is_symlink() and folder.resolve() not in shown:
            shutil.rmtree(folder, ignore_errors=True)
    for record in cache.recipes.glob("*.json") if cache.recipes else ():  # over a week old: remade by one validation (0.15 s) if needed
        if time.time() - record.stat().st_mtime > 7 * 86400:
            record.unlink(missing_ok=True)
    for log in cache.mine.glob("buildlog/*") if cache.mine else ():  # a build log not written for a week: remade by one build
        if time.time() - log.stat().st_mtime > 7 * 86400:
            log.unlink(missing_ok=True)
    for lock in cache.locks.glob("*.lock"):
        if lock.name != "cache.lock" and time.time() - lock.stat().st_mtime > 3600:
            lock.unlink(missing_ok=True)
