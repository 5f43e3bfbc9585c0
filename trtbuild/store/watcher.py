"""The watcher: a process of its own that receives the system calls trtbuild.store.syscall_filter hands
over from a step's worker (and the worker's children), notes each user file they name, digesting it
before the call goes on, and lets the call continue. So a file is digested at the moment it is read,
by whatever code reads it, and a file that was absent when looked for is noted as absent.

    python -m trtbuild.store.watcher FD      (FD: one end of a socket pair; see `start`)

Over the socket: the watcher says "ready" once loaded; the worker installs the filter and sends one
JSON line of settings (trtbuild.store.discovered.Scope.settings()) with the listener's
file descriptor (SCM_RIGHTS). The worker sends "end\\n" when its step is done and gets one JSON line back:
{"files": {path: sha256}, "stamps": {path: stat facts at the digest}, "absent": [path], "written":
[path], "calls": n, "unreadable": n}. The watcher lets every
later call through unrecorded, and exits when the last watched process has.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import socket
import stat
import sys
import time

from trtbuild.store import syscall_filter
from trtbuild.store.discovered import Scope, file_digest, stamp

_RECV, _SEND, _CONTINUE = 0xC0502100, 0xC0182101, 1  # SECCOMP_IOCTL_NOTIF_RECV / _SEND, USER_NOTIF_FLAG_CONTINUE
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC


class _Data(ctypes.Structure):
    _fields_ = [("nr", ctypes.c_int32), ("arch", ctypes.c_uint32), ("ip", ctypes.c_uint64),
                ("args", ctypes.c_uint64 * 6)]


class _Notif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("data", _Data)]


class _Resp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                                   ctypes.c_ulong]
_libc.process_vm_readv.restype = ctypes.c_ssize_t
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _read_memory(pid: int, address: int, size: int) -> bytes:
    """Up to `size` bytes at `address` in process `pid`, stopping at the first unmapped page."""
    buffer = ctypes.create_string_buffer(size)
    first = min(size, _PAGE - address % _PAGE)
    local = _Iovec(ctypes.addressof(buffer), size)
    remote = (_Iovec * 2)(_Iovec(address, first), _Iovec(address + first, size - first))
    got = _libc.process_vm_readv(pid, ctypes.byref(local), 1, remote, 2 if size > first else 1, 0)
    return buffer.raw[:max(got, 0)]


class Watcher:
    def __init__(self, listener: int, scope: Scope):
        self.listener, self.scope = listener, scope
        self.calls = syscall_filter.calls_by_number()
        self.files: dict[str, str] = {}
        self.stamps: dict[str, list[int]] = {}
        self.absent: set[str] = set()
        self.written: set[str] = set()
        self.recording, self.count, self.unreadable = True, 0, 0
        self.probe, self.probed = "", False  # a path the worker looks up once to prove the watch works
        self._notif, self._resp = _Notif(), _Resp()

    def serve_one(self) -> None:
        notif = self._notif
        ctypes.memset(ctypes.byref(notif), 0, ctypes.sizeof(notif))
        if _libc.ioctl(self.listener, _RECV, ctypes.byref(notif)) != 0:
            return  # the caller was interrupted (it will call again) or is gone
        try:
            if self.recording:
                self.count += 1
                self._note(notif)
        except Exception:  # never the watched process's failure: counted, and the report says so
            self.unreadable += 1
        finally:
            resp = self._resp
            resp.id, resp.val, resp.error, resp.flags = notif.id, 0, 0, _CONTINUE
            _libc.ioctl(self.listener, _SEND, ctypes.byref(resp))  # ENOENT: the call was abandoned

    def _note(self, notif: _Notif) -> None:
        call = self.calls.get(notif.data.nr)
        if call is None:
            return
        name, path_arg, dirfd_arg, flags_arg = call
        args = notif.data.args
        raw = _read_memory(notif.pid, args[path_arg], 4096)
        if not raw and args[path_arg]:
            self.unreadable += 1  # memory this watcher may not read (Yama, another user's process)
            return
        path = os.fsdecode(raw.partition(b"\0")[0])
        if not path:
            return
        if path == self.probe:
            self.probed = True
            return
        if not path.startswith("/"):
            dirfd = ctypes.c_int32(args[dirfd_arg] & 0xFFFFFFFF).value if dirfd_arg is not None else -100
            link = "cwd" if dirfd == syscall_filter.AT_FDCWD else f"fd/{dirfd}"
            try:
                path = os.path.join(os.readlink(f"/proc/{notif.pid}/{link}"), path)
            except OSError:
                return
        path = os.path.normpath(path)
        if path in self.files or path in self.written or not self.scope.users(path):
            return  # a file read, then written by the step, stays an input: the end of the step checks it
        if name in syscall_filter.MAKES or (name.startswith("open") and flags_arg is not None
                                            and args[flags_arg] & _WRITES):
            self.written.add(path)  # made by the step before it read it: its own scratch file
            return
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._absent(path)
            return
        except OSError:
            return
        if stat.S_ISREG(st.st_mode) and (digest := file_digest(path)):
            self.files[path] = digest
            self.stamps[path] = stamp(st) + [time.time_ns()]  # before the digest: a write during it shows

    def _absent(self, path: str) -> None:
        """Note the first missing folder or file on the path: what must appear for the call to find
        something. The dynamic loader's probes for shared libraries are the system's business."""
        if ".so" in os.path.basename(path) or path.startswith(self.scope.searched):
            return
        while not os.path.lexists(os.path.dirname(path)) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        if self.scope.users(path):
            self.absent.add(path)

    def result(self) -> dict:
        self.recording = False
        return {"files": self.files, "stamps": self.stamps, "absent": sorted(self.absent - self.files.keys() - self.written),
                "written": sorted(self.written), "calls": self.count, "unreadable": self.unreadable}


def serve(control: socket.socket) -> None:
    control.sendall(b"ready\n")
    message, fds, _, _ = socket.recv_fds(control, 1 << 20, 1)
    if not fds:
        return  # the worker could not install the filter
    while not message.endswith(b"\n"):
        more = control.recv(1 << 20)
        if not more:
            return
        message += more
    settings = json.loads(message)
    watcher = Watcher(fds[0], Scope.from_settings(settings))
    watcher.probe = settings["probe"]
    poll = select.poll()
    poll.register(watcher.listener, select.POLLIN)
    poll.register(control.fileno(), select.POLLIN)
    pending = b""
    while True:
        for fd, events in poll.poll():
            if fd == watcher.listener:
                if events & select.POLLIN:
                    watcher.serve_one()
                elif events & (select.POLLHUP | select.POLLERR):
                    return  # every watched process has exited
                continue
            data = control.recv(4096)
            if not data:
                poll.unregister(control.fileno())
            pending += data
            if b"probe\n" in pending:  # the worker looked its probe path up: was it seen?
                pending = pending.replace(b"probe\n", b"")
                watcher.recording = watcher.probed
                control.sendall(b"seen\n" if watcher.probed else b"unseen\n")
            if b"end\n" in pending:
                pending = b""
                control.sendall(json.dumps(watcher.result()).encode() + b"\n")


class Watching:
    """The worker's side: a watcher started, the filter installed on this process and handed over."""

    def __init__(self, scope: Scope):
        import subprocess

        ours, theirs = socket.socketpair()
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen([sys.executable, "-m", "trtbuild.store.watcher", str(theirs.fileno())],
                                        pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        self.socket = ours
        try:
            if self._line() != b"ready\n":
                raise OSError("the watcher did not start")
            syscall_filter.allow_tracing_by(self.process.pid)
            # Until the watcher has the listener, a watched call would wait forever: none from here to there.
            probe = os.path.join(os.path.realpath(os.getcwd()), f".trtbuild-probe-{os.getpid()}-{id(self)}")
            settings = json.dumps(scope.settings() | {"probe": probe}).encode() + b"\n"
            listener = syscall_filter.install()
        except OSError:
            ours.close()  # the watcher sees the socket close and exits
            raise
        socket.send_fds(ours, [settings], [listener])
        os.close(listener)
        os.path.lexists(probe)  # one call the watcher must see, or nothing it reports can be trusted
        ours.sendall(b"probe\n")
        if self._line() != b"seen\n":  # it lets every call through from now on
            raise OSError("the watcher could not read this process's system calls")

    def _line(self) -> bytes:
        data = b""
        while not data.endswith(b"\n"):
            more = self.socket.recv(1 << 20)
            if not more:
                break
            data += more
        return data

    def finish(self) -> dict:
        """What the watched processes read since the filter went on; later calls go through unrecorded."""
        self.socket.sendall(b"end\n")
        return json.loads(self._line())


def watch(scope: Scope) -> tuple[Watching | None, str]:
    """Watch this process's system calls from here on: (the worker's side, "") or (None, why not)."""
    why = syscall_filter.unavailable()
    if why:
        return None, why
    try:
        return Watching(scope), ""
    except OSError as exc:  # a sandbox without seccomp filters (gVisor, some containers)
        return None, f"cannot watch system calls here: {exc}"


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
