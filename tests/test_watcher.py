"""The watcher sees what Python's audit hook cannot: a read by native code, a stat-only check, a file that
is absent; it leaves out what the process made itself and libraries' files; and where system calls cannot
be watched, the record says so. Each case runs in a process of its own (a seccomp filter stays for the
life of the process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trtbuild.store import syscall_filter

SCRIPT = """
import ctypes, json, os, sys
from trtbuild.store import discovered

os.chdir(sys.argv[1])
with discovered.recording([os.path.join(sys.argv[1], "scratch")]) as seen:
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fclose(ctypes.c_void_p(libc.fopen(b"native.bin", b"rb")))  # read by C code, as a native library does
    os.stat("stat-only.txt")                        # looked at, never opened
    os.path.exists("missing/deeper/file.json")      # absent: its first missing folder is what must appear
    os.makedirs("made/inside")                      # the step's own output, then read back
    open("made/inside/out.txt", "w").write("x")
    open("made/inside/out.txt").read()
    open("scratch/ignored.txt").read()              # an input already in the key
    import csv                                      # the standard library: not the user's
found = seen.result()
print(json.dumps({"found": {k: v for k, v in found.items() if k != "tools"}, "observed": seen.observed}))
"""


def record(tmp_path: Path, **env) -> dict:
    (tmp_path / "native.bin").write_bytes(b"\x01\x02")
    (tmp_path / "stat-only.txt").write_text("s")
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "ignored.txt").write_text("i")
    import os

    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=os.environ | env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(bool(syscall_filter.unavailable()), reason=f"no seccomp here: {syscall_filter.unavailable()}")
def test_system_calls_show_native_reads_stats_and_absent_paths_and_nothing_the_step_made(tmp_path):
    result = record(tmp_path)
    assert result["observed"] == "system calls"
    found = result["found"]
    assert set(found["files"]) == {str(tmp_path / "native.bin"), str(tmp_path / "stat-only.txt")}
    assert set(found["absent"]) == {str(tmp_path / "missing")}


def test_without_system_calls_the_record_says_what_was_not_seen(tmp_path):
    result = record(tmp_path, TRTBUILD_OBSERVE="python")
    assert result["observed"] == ("Python's open() only, reads by native code not seen (TRTBUILD_OBSERVE=python)")
    found = result["found"]
    assert str(tmp_path / "native.bin") not in found["files"]  # C's fopen: not seen by the audit hook
    assert "absent" not in found or str(tmp_path / "missing") not in found["absent"]  # a stat: not seen either
    assert str(tmp_path / "scratch" / "ignored.txt") not in found["files"]
    assert not any("made" in p for p in found["files"])


def test_the_filter_hands_over_path_calls_and_lets_fstat_of_a_descriptor_through():
    from trtbuild.store.syscall_filter import calls_by_number, _program

    calls = calls_by_number()
    program = _program()
    assert len(program) % 8 == 0 and len(program) // 8 < 256  # BPF's forward jumps are 8-bit
    assert {"openat", "newfstatat", "statx", "execve", "faccessat2", "readlinkat"} <= {c[0] for c in calls.values()}
