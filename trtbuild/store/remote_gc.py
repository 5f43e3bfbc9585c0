"""trtbuild gc on a remote cache: mark and sweep, so it cannot race another machine's push.

Records are retired as the policy says (never the protected keys), dated by the remote's own clock:
the later of the record's LastModified and its used/<key> marker (rewritten on every pull). Objects
no remaining record names are not deleted at once: they are *marked* (gc/condemned.json, dated by
the remote). A later gc, at least `grace` after the mark, *sweeps* the marked objects that are still
unreferenced and have not been written since the mark. A push uploads again any object on the mark
list before writing its record (its new date keeps the sweep off it) and checks its objects after the
record is written, so an object a new record names is never swept.
"""

from __future__ import annotations

import json

from trtbuild.store.fsutil import loads_bounded
from trtbuild.store.validate import DIGEST, record_problem

CONDEMNED = "gc/condemned.json"


def collect(remote, policy, protected: set[str], dry_run: bool, grace: float) -> dict:
    from trtbuild.store.retention import retire

    fs, root, call = remote.fs, remote.root, remote._call
    now = _remote_now(remote) if not dry_run else None
    used = {path.rsplit("/", 1)[1]: _modified(info) for path, info in _find(remote, "used").items()}
    actions, malformed, temps = [], [], {}
    for path, info in _find(remote, "actions").items():
        name = path.rsplit("/", 1)[1]
        if name.endswith(".tmp"):  # a push under way, or one that was killed
            temps[path] = info
            continue
        key = name.removesuffix(".json")
        try:
            data = call(remote._read, path)
            record = loads_bounded(data) if data is not None else None
        except (ValueError, FileNotFoundError):
            record = None
        if not name.endswith(".json") or record_problem(record, key):
            malformed.append(path)  # names nothing: keeps nothing alive
        else:
            actions.append((path, record, max(_modified(info), used.get(key, 0))))
    objects = _find(remote, "objects")
    temps |= {p: info for p, info in objects.items() if p.endswith(".tmp")}
    objects = {p: info for p, info in objects.items() if DIGEST.match(p.rsplit("/", 1)[1])}
    sizes = {path.rsplit("/", 1)[1]: info["size"] for path, info in objects.items()}
    if now is None:
        now = max([_modified(i) for i in objects.values()] + [a[2] for a in actions] + [0])
    retired = retire(actions, protected, sizes, policy, now) if not policy.empty else []
    gone = set(retired)
    live = {o["digest"] for path, record, _ in actions if path not in gone for o in record["outputs"].values()}
    unreferenced = {p for p in objects if p.rsplit("/", 1)[1] not in live}

    marked_at, marked = _mark(remote)
    sweep_now = marked_at is not None and now - marked_at >= grace
    swept = [p for p in unreferenced if sweep_now and p.rsplit("/", 1)[1] in marked
             and _modified(objects[p]) < marked_at]
    old_temps = [p for p, info in temps.items() if now - _modified(info) > max(grace, 3600)]
    if not dry_run:
        for path in [*retired, *malformed]:
            call(fs.rm_file, path)
        retired_keys = {p.rsplit("/", 1)[1].removesuffix(".json") for p in [*retired, *malformed]}
        for key in retired_keys & set(used):
            call(fs.rm_file, f"{root}/used/{key[:2]}/{key}")
        for path in [*swept, *old_temps]:
            call(fs.rm_file, path)
        if marked_at is None or sweep_now:  # a new mark; an unswept one stays until its grace has passed
            remote._write(f"{root}/{CONDEMNED}", json.dumps(
                {"objects": sorted(p.rsplit("/", 1)[1] for p in unreferenced - set(swept))}).encode())
    return {"retired_actions": len(retired), "removed_objects": len(swept), "malformed_records": len(malformed),
            "freed_bytes": sum(objects[p]["size"] for p in swept), "kept_objects": len(live),
            "marked_objects": len(unreferenced - set(swept)), "dry_run": dry_run}


def _find(remote, folder: str) -> dict:
    try:
        return remote._call(remote.fs.find, f"{remote.root}/{folder}", detail=True) or {}
    except FileNotFoundError:
        return {}


def _info(remote, path: str) -> dict:
    try:
        return remote._call(remote.fs.info, path)
    except FileNotFoundError:
        return {}


def _mark(remote) -> tuple[float | None, set[str]]:
    """(when the last gc marked, by the remote's clock; the objects it marked), or (None, empty)."""
    path = f"{remote.root}/{CONDEMNED}"
    info = _info(remote, path)
    if not info:
        return None, set()
    try:
        data = loads_bounded(remote._call(remote.fs.cat_file, path))
        marked = {d for d in data["objects"] if isinstance(d, str)}
    except (ValueError, KeyError, TypeError, FileNotFoundError):
        return None, set()
    return _modified(info), marked


def _remote_now(remote) -> float:
    """The remote's clock: the date it gives a file written now (never this machine's clock)."""
    path = f"{remote.root}/gc/clock"
    remote._write(path, b"")
    return _modified(_info(remote, path))


def _modified(info: dict) -> float:
    """An fsspec listing entry's modification time (local: mtime; S3: LastModified; GCS: updated)."""
    stamp = info.get("mtime") or info.get("LastModified") or info.get("updated") or 0
    if isinstance(stamp, str):
        from datetime import datetime

        stamp = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)
