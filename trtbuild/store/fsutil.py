"""Crash-safe file operations: nothing half-written is ever visible under its final name."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# What a new file's mode would be: a cache shared by a group (umask 002) stays writable by the group.
FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600 whatever the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_FICLONE = 0x40049409  # Linux ioctl: the copy shares the source's blocks until either is written


def copy_file(src: Path, dest: Path) -> None:
    """Copy `src` to `dest`: a reflink where the file system offers one (XFS, Btrfs: no second copy
    on disk, and editing one never changes the other), else a plain copy."""
    try:
        import fcntl

        with open(src, "rb") as source, open(dest, "wb") as target:
            fcntl.ioctl(target.fileno(), _FICLONE, source.fileno())
        return
    except (ImportError, OSError):
        pass
    shutil.copyfile(src, dest)


def publish_link(src: Path, dest: Path) -> None:
    """Make `dest` a hard link to (or, across filesystems, a copy of) `src`, replacing it atomically."""
    tmp = _temp_beside(dest)
    try:
        os.link(src, tmp)
    except OSError:
        copy_file(src, tmp)
    os.replace(tmp, dest)


def publish_copy(src: Path, dest: Path) -> None:
    """Make `dest` a writable copy of `src` (a reflink where it can be) with its mtime, replacing it atomically."""
    tmp = _temp_beside(dest)
    copy_file(src, tmp)
    st = os.stat(src)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, dest)


def _temp_beside(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    return tmp
