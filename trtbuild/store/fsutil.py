"""Crash-safe file operations: nothing half-written is ever visible under its final name."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import threading
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# What a new file's mode would be: a cache shared by a group (umask 002) stays writable by the group.
FILE_MODE = 0o666 & ~_read_umask()


def share_with_group(root: Path) -> None:
    """A cache directory that is setgid (chmod g+s: its files take its group) is shared by that group:
    what this process creates is group-writable whatever the user's umask, so the next member of the
    group can replace it. Workers inherit the umask."""
    global FILE_MODE
    try:
        if not os.stat(root).st_mode & stat.S_ISGID:
            return
    except OSError:
        return
    os.umask(_read_umask() & ~0o070)
    FILE_MODE = 0o666 & ~_read_umask()


def create_new(path: str | os.PathLike) -> int:
    """A file descriptor for writing a fresh `path` (a log): whatever was there is unlinked (a link put
    there by another user is removed, not followed), then the file is created exclusively, never through
    a symbolic link: nobody else's file is truncated or written."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)


def write_new(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a fresh `path` (see create_new)."""
    with os.fdopen(create_new(path), "w") as f:
        f.write(text)


def atomic_write(path: Path, data: bytes, over_folder: bool = False) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it. `over_folder`: a folder in its place
    is removed (a file of the cache's own, never a path the user named)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile  # here: a no-op build writes nothing

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600 whatever the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path) if over_folder else os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """os.replace, over a folder too: a folder left where a file belongs (by a fault, or another user of a
    shared cache) is removed, not a failure of every later run."""
    try:
        os.replace(src, dest)
    except OSError:
        if not os.path.isdir(dest) or os.path.islink(dest):
            raise
        remove_any(dest)
        os.replace(src, dest)


def remove_any(path: str | os.PathLike) -> None:
    """Remove whatever is at `path` (a file, a link, a FIFO, a folder and all it holds), following no link;
    what cannot be removed stays (the caller's next step says so)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def no_links(root: Path, names, warn) -> None:
    """A symbolic link (or a file) where the cache keeps a folder (objects/, locks/ ...) would lead its
    reads and writes elsewhere: it is removed with a warning (the folder is made again when needed);
    never followed."""
    for name in names:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
            remove_any(path)
            gone = not os.path.lexists(path)
            warn(f"{path} is {what}, {'removed' if gone else 'and cannot be removed: remove it'}; the cache never "
                 "follows a link")


def open_lock(path: str | os.PathLike, flags: int) -> int:
    """A lock file's descriptor, never through a link: a link, folder or FIFO in its place (another
    user's, a fault) is removed and the file made again."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        fd = -1
    if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    if fd >= 0:
        os.close(fd)
    remove_any(path)
    return os.open(path, flags, 0o666)


class NotRegularFile(OSError):
    """What read_record found is not a regular file; `mode` says what it is."""

    def __init__(self, path, mode: int):
        super().__init__(errno.EINVAL, "not a regular file", str(path))
        self.mode = mode


def read_record(path: str | os.PathLike, limit: int = 64 << 20, follow: bool = False) -> bytes:
    """The bytes of a small file the cache wrote (a record, a state file): a regular file of at most `limit`
    bytes, opened without blocking. Anything else, such as a FIFO or a link to /dev/zero in its place,
    raises OSError, as an unreadable file does: the caller's miss, not a hang."""
    return read_record_stat(path, limit, follow)[0]


def read_record_stat(path: str | os.PathLike, limit: int = 64 << 20,
                     follow: bool = False) -> tuple[bytes, os.stat_result]:
    """read_record, with the stat of the very file it read (what trtbuild.store.buildlog keys on). A
    symbolic link in the file's place is not followed (ELOOP: an OSError) unless `follow` (a user's recipe)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path, st.st_mode)
        if st.st_size > limit:  # said before reading a byte of it
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        return b"".join(chunks), st
    finally:
        os.close(fd)


MAX_DEPTH = 64  # nesting of JSON read back: trtbuild writes at most a dozen levels


def read_json(path: str | os.PathLike, limit: int = 64 << 20) -> object:
    """The parsed JSON of a file the cache (or this user) wrote: read_record's checks (a regular file, not
    a link, of at most `limit` bytes, opened without blocking; else OSError), parsed by loads_bounded
    (ValueError for what is not JSON or nests deeper than MAX_DEPTH)."""
    return loads_bounded(read_record(path, limit))


def read_json_stat(path: str | os.PathLike, limit: int = 64 << 20) -> tuple[object, os.stat_result]:
    data, st = read_record_stat(path, limit)
    return loads_bounded(data), st


def read_json_or_warn(path: str | os.PathLike, what: str, limit: int = 64 << 20) -> object | None:
    """read_json, or None: silently for no file, with a one-line warning (on stderr) for anything else."""
    try:
        return read_json(path, limit)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        import sys

        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"trtbuild: warning: ignoring {what} {path} ({why}); it is asked again", file=sys.stderr)
        return None


def loads_bounded(data: bytes | str, depth: int = MAX_DEPTH) -> object:
    """json.loads, with a depth bound: a value nested deeper than `depth` (which would exhaust Python's
    stack here or in whatever walks it later) is a ValueError, as text that is not JSON is."""
    import json

    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {depth} levels") from None
    if isinstance(value, (dict, list)) and too_deep(data, depth):
        raise ValueError(f"JSON nested deeper than {depth} levels")
    return value


_STRING = None  # a JSON string literal (compiled on first use)
_EMPTY = None  # an innermost [] or {}


def too_deep(text: bytes | str, depth: int = MAX_DEPTH) -> bool:
    """Whether valid JSON `text` nests deeper than `depth`, at C speed (a walk of the parsed value in
    Python costs milliseconds for a code index): its strings removed, then its brackets alone, each
    pass removes the innermost pairs; what remains after `depth` passes nests deeper."""
    global _STRING, _EMPTY
    data = text.encode() if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= depth:
        return False
    if _STRING is None:
        import re

        _STRING, _EMPTY = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"'), re.compile(rb"\[\]|\{\}")
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(depth):
        brackets = _EMPTY.sub(b"", brackets)
        if not brackets:
            return False
    return True


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


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
