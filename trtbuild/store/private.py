"""CACHE/users/<uid>/: what a no-op build trusts without checking, kept where only its user writes.

A shared cache is written by every member of its group. Objects and action records are checked when
read back (trtbuild.store.validate), but some state is trusted as it is: the build log (which step key
a recipe's key components give, which recipe a validated-recipe record stands for), the records of
recipe files validated before, and the installed tools' versions and GPUs seen last. Anyone who can
write these can make another user run code or serve another recipe's plan, so each user keeps them
in a folder of their own: created with mode 0700, used only while it is a real folder (not a link),
owned by this user and closed to everyone else. A folder that is not (another member made it first,
or opened it up) is not read: the build runs without the no-op shortcuts, with one warning.

`users/` itself is sticky (as /tmp), so a member cannot rename or remove another's folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trtbuild.store.fsutil import remove_any


def user_folder(root: Path, warn, make: bool = True) -> Path | None:
    """This user's folder in the cache at `root`, made if needed (`make`: with the cache itself); None when
    it cannot be made (a read-only cache) or is not this user's alone (warned)."""
    users = root / "users"
    mine = users / str(os.geteuid())
    try:
        st = os.lstat(mine)
    except FileNotFoundError:
        st = _make(users, mine) if make else None
    except OSError:
        return None
    if st is not None and st.st_uid == os.geteuid() and not alone(st):
        remove_any(mine)  # ours but a link, a file, or opened to others (who may have written in it): made anew
        warn(f"{mine} was {_what(st)}; replaced by a folder of this user's alone")
        st = _make(users, mine)
    if st is None:
        return None
    if not alone(st):
        warn(f"{mine} is {_what(st)}, not a folder of this user's alone: its build log and validated recipes are not "
             f"used (remove it: it is made again with mode 0700)")
        return None
    return mine


def alone(st: os.stat_result) -> bool:
    """Whether `st` (an lstat) is a real folder of this user's that no one else can enter or write."""
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _what(st: os.stat_result) -> str:
    return ("a link" if stat.S_ISLNK(st.st_mode) else "not a folder" if not stat.S_ISDIR(st.st_mode)
            else f"owned by uid {st.st_uid}" if st.st_uid != os.geteuid() else f"mode {st.st_mode & 0o777:o}")


def _make(users: Path, mine: Path) -> os.stat_result | None:
    try:
        try:
            os.makedirs(users, 0o775)  # the cache too, on its first build
            os.chmod(users, os.stat(users).st_mode & 0o7777 | stat.S_ISVTX)  # sticky: no renaming others' folders
        except FileExistsError:
            pass
        os.mkdir(mine, 0o700)
        os.chmod(mine, 0o700)  # whatever the umask and the cache's setgid bit
        return os.lstat(mine)
    except FileExistsError:  # made meanwhile: checked as found
        try:
            return os.lstat(mine)
        except OSError:
            return None
    except OSError:  # a cache this user cannot write to
        return None
