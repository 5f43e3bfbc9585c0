"""A seccomp filter that hands each path-naming system call of this process (and of every thread and
child it has or will have) to a watcher process before the kernel runs it: the way reads made by
native code (safetensors, HDF5, TensorFlow's C++ I/O, a memory map's open) are seen. Linux only,
unprivileged (no_new_privs), for x86_64 and aarch64; `unavailable()` says why not elsewhere.

A filter cannot be removed: only a process that exits after its step installs one (the runner gives
steps that run the user's code a worker of their own). The watcher is trtbuild.store.watcher.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

_SECCOMP = {"x86_64": 317, "aarch64": 277}
_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_*
_RET_ALLOW, _RET_USER_NOTIF = 0x7FFF0000, 0x7FC00000
_SET_MODE_FILTER, _GET_ACTION_AVAIL = 1, 2
_FLAG_TSYNC, _FLAG_NEW_LISTENER, _FLAG_TSYNC_ESRCH = 1, 8, 16
_PR_SET_NO_NEW_PRIVS, _PR_SET_PTRACER = 38, 0x59616D61
AT_FDCWD, AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW = -100, 0x1000, 0x100

# name: (x86_64 number or None, aarch64 number or None, path argument, dirfd argument or None,
#        flags argument or None). What open/stat/access/readlink/exec name is something the process
# depends on; what mkdir/rename/link make (MAKES) is its own output, not an input.
CALLS = {
    "open": (2, None, 0, None, 1),
    "creat": (85, None, 0, None, None),
    "stat": (4, None, 0, None, None),
    "lstat": (6, None, 0, None, None),
    "access": (21, None, 0, None, None),
    "readlink": (89, None, 0, None, None),
    "execve": (59, 221, 0, None, None),
    "openat": (257, 56, 1, 0, 2),
    "newfstatat": (262, 79, 1, 0, 3),
    "readlinkat": (267, 78, 1, 0, None),
    "faccessat": (269, 48, 1, 0, None),
    "execveat": (322, 281, 1, 0, None),
    "statx": (332, 291, 1, 0, 2),
    "openat2": (437, 437, 1, 0, None),  # its flags live in a struct: read as a plain open
    "faccessat2": (439, 439, 1, 0, None),
    "rename": (82, None, 1, None, None),
    "mkdir": (83, None, 0, None, None),
    "link": (86, None, 1, None, None),
    "symlink": (88, None, 1, None, None),
    "mkdirat": (258, 34, 1, 0, None),
    "renameat": (264, 38, 3, 2, None),
    "linkat": (265, 37, 3, 2, None),
    "symlinkat": (266, 36, 2, 1, None),
    "renameat2": (316, 276, 3, 2, None),
}
MAKES = frozenset({"creat", "rename", "mkdir", "link", "symlink", "mkdirat", "renameat", "linkat", "symlinkat",
                   "renameat2"})
_BY_FLAGS_ON_FD = ("newfstatat", "statx")  # with AT_EMPTY_PATH they are fstat(fd): no path, not handed over


def machine() -> str:
    return platform.machine().lower().replace("arm64", "aarch64").replace("amd64", "x86_64")


def calls_by_number() -> dict[int, tuple[str, int, int | None, int | None]]:
    """{syscall number: (name, path argument, dirfd argument, flags argument)} on this machine."""
    column = 0 if machine() == "x86_64" else 1
    return {spec[column]: (name, *spec[2:]) for name, spec in CALLS.items() if spec[column] is not None}


def unavailable() -> str:
    """Why system calls cannot be watched here ("" when they can)."""
    if sys.platform != "linux":
        return f"{sys.platform}: no seccomp"
    if machine() not in _SECCOMP:
        return f"{machine()}: no seccomp filter for this architecture"
    if os.environ.get("TRTBUILD_OBSERVE") == "python":
        return "TRTBUILD_OBSERVE=python"
    action = ctypes.c_uint32(_RET_USER_NOTIF)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SECCOMP[machine()], _GET_ACTION_AVAIL, 0, ctypes.byref(action)) != 0:
        return f"the kernel has no seccomp user notification ({os.strerror(ctypes.get_errno())})"
    return ""


def _program() -> bytes:
    """The BPF program: hand over the listed calls (bar fstat-by-fd), allow everything else. Jumps name
    labels; BPF's go forward only, relative to the next instruction."""
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    insns: list[tuple] = [(ld, 0, 0, 4), (jeq, 0, "allow", _ARCH[machine()]), (ld, 0, 0, 0)]
    checks = []
    for number, (name, _, _, flags) in sorted(calls_by_number().items()):
        if name in _BY_FLAGS_ON_FD:
            checks.append((f"check {number}", flags))
        insns.append((jeq, checks[-1][0] if name in _BY_FLAGS_ON_FD else "notify", 0, number))
    insns.append((ret, 0, 0, _RET_ALLOW))  # none of them
    labels = {}
    for label, flags in checks:  # fstatat / statx of an fd (AT_EMPTY_PATH) names no path
        labels[label] = len(insns)
        insns += [(ld, 0, 0, 16 + 8 * flags), (jset, "allow", "notify", AT_EMPTY_PATH)]
    labels["allow"] = len(insns)
    insns.append((ret, 0, 0, _RET_ALLOW))
    labels["notify"] = len(insns)
    insns.append((ret, 0, 0, _RET_USER_NOTIF))

    def relative(target, i: int) -> int:
        return labels[target] - i - 1 if isinstance(target, str) else target

    return b"".join(struct.pack("<HBBI", op, relative(jt, i), relative(jf, i), k)
                    for i, (op, jt, jf, k) in enumerate(insns))


def install() -> int:
    """Install the filter on every thread of this process; return the listener's file descriptor."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    code = _program()
    buffer = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(code) // 8, ctypes.addressof(buffer))
    flags = _FLAG_TSYNC | _FLAG_NEW_LISTENER | _FLAG_TSYNC_ESRCH
    fd = libc.syscall(_SECCOMP[machine()], _SET_MODE_FILTER, flags, ctypes.byref(prog))
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"seccomp: {os.strerror(ctypes.get_errno())}")
    return fd


def allow_tracing_by(pid: int) -> None:
    """Let the watcher read this process's memory where Yama restricts it to ancestors (no-op elsewhere)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PTRACER, pid, 0, 0, 0)
