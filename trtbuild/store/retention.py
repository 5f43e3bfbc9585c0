"""Which action records `trtbuild gc` retires, so a nightly runner's cache stays bounded.

Never retired: the steps of each recipe's last build (its state file) and of what out/ shows (its
manifest). Of the rest: all but the newest `keep_last` per recipe x step x target, those last used
more than `older_than` seconds ago, then the least recently used first until the objects the
remaining records name fit in `max_size` bytes. Objects no remaining record names are then deleted
by gc. A record's last use is when it was made or last served as a hit (its file's mtime, touched
at most daily by trtbuild.store.cache).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Policy:
    keep_last: int | None = None
    older_than: float | None = None  # seconds
    max_size: int | None = None  # bytes

    @property
    def empty(self) -> bool:
        return self.keep_last is None and self.older_than is None and self.max_size is None


def parse_age(text: str) -> float:
    """"30d", "12h", "90m", "3600s" (or plain seconds) -> seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not found:
        raise ValueError(f"{text!r}: expected an age such as 30d, 12h, 90m or 3600s")
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def retire(actions: list[tuple[Path | str, dict, float]], protected: set[str], sizes: dict[str, int],
           policy: Policy, now: float, outside: int = 0) -> list[Path | str]:
    """The action files to delete. `actions`: (file, record, last used) triples, the last use by the clock
    of the store that holds the record (a file's mtime, an object's LastModified); `protected`: keys never
    retired; `sizes`: object digest -> bytes; `outside`: bytes --max-size counts besides the objects.
    A record's own `created` (the writer's clock) only orders --keep-last, and never later than the store
    saw the record: a runner whose clock is a year fast cannot keep its results alive."""
    def removable(record: dict) -> bool:
        return record.get("key") not in protected

    used = {path: last_used for path, record, last_used in actions}
    made = {path: min(record.get("created", last_used), last_used) for path, record, last_used in actions}
    actions = [(path, record) for path, record, _ in actions]

    drop: set[Path] = set()
    if policy.keep_last is not None:
        history = defaultdict(list)
        for path, record in actions:
            history[(record.get("recipe"), record.get("step"))].append((made[path], str(path), path, record))
        for entries in history.values():
            entries.sort(key=lambda e: e[0], reverse=True)
            drop |= {path for _, _, path, record in entries[policy.keep_last:] if removable(record)}
    if policy.older_than is not None:
        drop |= {path for path, record in actions
                 if removable(record) and now - used[path] > policy.older_than}
    if policy.max_size is not None:
        kept = [(path, record) for path, record in actions if path not in drop]
        users = Counter(o["digest"] for _, record in kept for o in record["outputs"].values())
        total = sum(sizes.get(digest, 0) for digest in users) + outside
        for path, record in sorted(kept, key=lambda pr: used[pr[0]]):  # least recently used first
            if total <= policy.max_size:
                break
            if not removable(record):
                continue
            drop.add(path)
            for digest in {o["digest"] for o in record["outputs"].values()}:
                users[digest] -= 1
                if not users[digest]:
                    total -= sizes.get(digest, 0)
    return sorted(drop)
