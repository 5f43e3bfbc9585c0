"""A worker process: runs the steps the runner sends it, one at a time (see trtbuild.execution.pool).

Protocol: one JSON request per line on stdin ({"job", "log", "exit_after"}), one JSON result per
line on the original stdout. While a step runs, file descriptors 1 and 2 point at the step's log,
so output of native libraries (TensorRT, ONNX Runtime) lands there too. End of input: exit.

    python -m trtbuild.execution.worker [--preload MODULE...]
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from trtbuild.errors import StepError, plain
from trtbuild.execution.registered import register_all
from trtbuild.steps import Job, load_kind
from trtbuild.steps.action import differences, step_environment
from trtbuild.store import discovered, hashing


def _exit_with_parent() -> None:
    """If the runner is killed, stop too instead of building for nobody."""
    parent = os.getppid()

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(137)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _brief(text: str, lines: int = 12) -> str:
    """Long library errors (torch.export's run to pages) end with their summary: keep the end."""
    kept = text.strip().splitlines()
    if len(kept) <= lines:
        return "\n".join(kept)
    return "\n".join(["(shortened; the full error is in the log)", *kept[-lines:]])


def run_job(spec: dict, last: bool = False) -> dict:
    """Run one step. `last`: this process exits afterwards, so the step's system calls can be watched
    (a seccomp filter stays for the life of the process: trtbuild.store.syscall_filter)."""
    job = Job(
        kind=spec["kind"],
        params=spec["params"],
        inputs={name: Path(p) for name, p in spec["inputs"].items()},
        outdir=Path(spec["outdir"]),
        context=spec["context"],
    )
    hashing.written.clear()
    register_all(spec.get("registered", {}))
    step_environment(spec.get("env", {}))
    wrong = _not_the_action(spec)
    if wrong:
        return {"ok": False, "user_error": False,
                "error": f"not built here: this worker would build another action than its key describes: {wrong}"}
    try:
        if "python_path" in job.context:  # the user's code runs: what it reads is an input too
            ignore = [str(job.outdir.parent), *(str(p) for p in job.inputs.values())]
            kind = load_kind(job.kind)
            preload = kind.preload(job.params) if hasattr(kind, "preload") else ()
            with discovered.recording(ignore, native=last, preload=preload) as seen:
                meta = kind.run(job)
            meta["discovered"] = seen.result()
            meta["reads_observed"] = seen.observed
        else:
            meta = load_kind(job.kind).run(job)
        # what the step wrote with write_hashed: the runner stores those files without reading them again
        written = {Path(p).name: facts for p, facts in hashing.written.items() if Path(p).parent == job.outdir}
        return {"ok": True, "meta": meta, "written": written}
    except discovered.FileChangedError as exc:
        return {"ok": False, "error": str(exc), "user_error": False}
    except StepError as exc:  # the log gets the message and where it was raised, like any failure
        traceback.print_exc()
        return {"ok": False, "error": str(exc), "user_error": exc.user_error, "meta": exc.details}
    except Exception as exc:  # an unexpected failure: the full traceback goes to the step log
        traceback.print_exc()
        return {"ok": False, "error": _brief(plain(f"{type(exc).__name__}: {exc}")), "user_error": False}


def _not_the_action(spec: dict) -> str:
    """What differs between the action the job's key describes and what this process would run:
    trtbuild's code, tool versions and (on a farm node) the user's files it sees. "" when nothing."""
    expected = spec.get("expect")
    if not expected:
        return ""
    found = differences(spec["kind"], expected)
    for name, files in spec.get("sources", {}).items():
        for label, path in files.items():
            if discovered.file_digest(path) != expected["inputs"][name][label]:
                found.append(f"{path} differs from the file the key was computed from")
    return "; ".join(found)


_libc = ctypes.CDLL(None)  # for fflush: native libraries buffer their own stdout


def _point_output_at(fd: int) -> None:
    """Send fds 1 and 2 (Python's and C's stdout / stderr) to `fd`."""
    sys.stdout.flush()
    sys.stderr.flush()
    _libc.fflush(None)
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def _reset_peak_memory() -> None:
    """Start this process's peak resident memory (VmHWM) afresh, so the next step's peak is its own (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _log_peak_memory() -> None:
    """One line in the step's log: the most resident memory this process held while the step ran."""
    try:
        with open("/proc/self/status") as f:
            peak = next((line.split()[1] for line in f if line.startswith("VmHWM:")), None)
    except OSError:
        return
    if peak is not None:
        print(f"trtbuild: peak resident memory of this step: {int(peak) >> 10} MiB", flush=True)


def main(argv: list[str]) -> int:
    _exit_with_parent()
    replies = os.fdopen(os.dup(1), "w")
    quiet = os.open(os.devnull, os.O_WRONLY)
    _point_output_at(quiet)
    if "--preload" in argv:  # what the steps still to run import: a spare loads it while it waits
        for module in argv[argv.index("--preload") + 1:]:
            try:
                __import__(module)
            except Exception:  # a broken install: the step that needs it reports the error
                pass
    for line in sys.stdin:
        request = json.loads(line)
        try:  # never through a link: another user's file is not truncated (the runner removed any old log)
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        except OSError:
            log = os.open(os.devnull, os.O_WRONLY)
        _point_output_at(log)
        os.close(log)
        _reset_peak_memory()
        result = run_job(request["job"], last=request["exit_after"])
        _log_peak_memory()
        _point_output_at(quiet)
        gc.collect()
        replies.write(json.dumps(result) + "\n")
        replies.flush()
        if request["exit_after"]:
            break
    # Skip interpreter teardown: unloading torch or TensorFlow takes a second and saves nothing.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
