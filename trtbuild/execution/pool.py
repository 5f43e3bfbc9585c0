"""Worker processes for the runner: each step runs outside the runner, so a TensorRT crash or an
out-of-memory kill fails that step, not the run.

Workers are reused between steps, so ONNX and ONNX Runtime are imported once per run, and one
spare is kept warm (started and importing) while a step runs. Some steps get a worker of their own
that exits afterwards (the step kind's FRESH_PROCESS, or the runner's choice): exports and
calibration loaders import the user's code, and two recipes' modules of the same name must never
meet in one process; a step pinned to a GPU sets CUDA_VISIBLE_DEVICES, which CUDA reads once.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from trtbuild.execution.executor import Task


# `python -m` would put the current directory first on sys.path, where an onnx.py or numpy/ of the
# user's would replace the library (and the key would name a version that never ran). The worker's
# path is the runner's, minus the current directory, plus the directory holding trtbuild.
_BOOT = ("import os, sys; sys.path[:] = sys.argv[1].split(os.pathsep); from trtbuild.execution.worker import main; "
         "sys.exit(main(sys.argv[2:]))")


def _worker_path() -> str:
    package_root = str(Path(__file__).resolve().parents[2])
    path = [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != Path.cwd().resolve()]
    return os.pathsep.join([package_root] + [p for p in path if p != package_root])


def _environment() -> dict[str, str]:
    """A worker's environment: no variable that could change a step's output unless some kind keys it
    (each step then keeps only its own kind's: trtbuild.steps.action)."""
    from trtbuild.frontends.registry import REGISTRY  # a plugin framework's too, once planning found it
    from trtbuild.steps import loaded_kinds
    from trtbuild.steps.action import worker_environment

    declared = {v for kind in loaded_kinds() for v in kind.READS.env} | {v for f in REGISTRY.values() for v in f.env}
    return worker_environment(tuple(sorted(declared)))


class Worker:
    def __init__(self, preload: tuple[str, ...] = ()):
        self.preload = set(preload)
        command = [sys.executable, "-c", _BOOT, _worker_path()] + (["--preload", *preload] if preload else [])
        import subprocess  # here: a no-op build starts no worker

        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=_environment())

    def run(self, job: dict, log: Path, last: bool, timeout: float | None = None) -> dict | None:
        """The job's result, or None if the worker died (or was killed after `timeout` seconds)."""
        request = json.dumps({"job": job, "log": str(log), "exit_after": last}) + "\n"
        self.timed_out = False
        timer = threading.Timer(timeout, self._time_out) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
        except OSError:  # the worker is gone (killed, crashed)
            reply = b""
        finally:
            if timer:
                timer.cancel()
        if not reply:
            self.proc.wait()
            return None
        return json.loads(reply)

    def _time_out(self) -> None:
        self.timed_out = True
        self.proc.kill()


class WorkerPool:
    """The local executor (trtbuild.execution.executor): steps run in worker processes on this machine."""

    def __init__(self, size: int):
        self.size = size  # concurrent steps; one more process may be warming up
        self._idle: list[Worker] = []
        self._live: set[Worker] = set()
        self._running: dict[int, Worker] = {}  # id(task) -> the worker running it
        self._lock = threading.Lock()
        self._closed = False

    def run(self, task: Task) -> dict:
        """Run the task's job in a worker. `task.spare`: more steps will follow, so warm up a worker for
        them, importing these modules (what those steps import); None: no spare."""
        isolated, timeout, log = task.isolated, task.timeout, task.log
        worker = self._take(task.spare, isolated, task.imports)
        with self._lock:
            if task.cancelled is not None and task.cancelled.is_set():  # cancelled before it began
                self._idle.append(worker)
                return {"ok": False, "error": "cancelled before it started"}
            self._running[id(task)] = worker
        result = worker.run(task.job, log, last=isolated, timeout=timeout)
        with self._lock:
            self._running.pop(id(task), None)
            if result is None or isolated or self._closed:
                self._live.discard(worker)
            else:
                self._idle.append(worker)
        if result is None and worker.timed_out:
            return {"ok": False, "error": f"timed out after {timeout:g} s (step timeout): the worker was killed; "
                    f"its last output:\n{_tail(log)}".rstrip()}
        if result is None:
            return {"ok": False, "error": f"worker process died (exit code {worker.proc.returncode}); "
                    f"see the log: {log}\n{_tail(log)}"}
        if isolated:
            worker.proc.wait()  # it is exiting: reap it
        return result

    def cancel(self, task: Task) -> None:
        """Stop `task`'s job now (its `cancelled` is set): its worker is killed, the others go on."""
        with self._lock:
            worker = self._running.get(id(task))
            if worker is not None:
                worker.proc.kill()

    def prestart(self, preload: tuple[str, ...] = (), count: int = 1) -> None:
        """Have a worker starting (importing `preload`) unless `count` are idle: the next step need not wait
        for a process. The last one started is the first one taken."""
        with self._lock:
            if len(self._idle) < count and not self._closed:
                self._idle.append(self._spawn(preload))

    def _take(self, spare: tuple[str, ...] | None, isolated: bool = False, imports: tuple[str, ...] = ()) -> Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("worker pool is closed")
            worker = self._idle.pop(self._best(imports)) if self._idle else self._spawn()
            # A spare warms up while this step runs: within -j processes, or one more where this worker
            # exits after its step (the spare takes its place); more would only take CPU from the steps.
            if spare is not None and not self._idle and len(self._live) < self.size + isolated:
                self._idle.append(self._spawn(spare))
            return worker

    def _best(self, imports: tuple[str, ...]) -> int:
        """The idle worker for a step that imports `imports`: one that loaded them, and of those the one that
        loaded least besides (the others may be what the next steps need); else the last one to go idle."""
        fits = [i for i, w in enumerate(self._idle) if w.preload.issuperset(imports)]
        if not imports or not fits:
            return -1
        return min(reversed(fits), key=lambda i: len(self._idle[i].preload))

    def _spawn(self, preload: tuple[str, ...] = ()) -> Worker:
        worker = Worker(preload)
        self._live.add(worker)
        return worker

    def close(self) -> None:
        """Stop the idle workers (close runs after the last step). They hold nothing; a spare may
        still be importing, and waiting for that would only delay the end of the run."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live.difference_update(idle)
        for worker in idle:
            worker.proc.kill()
            worker.proc.wait()

    def kill_all(self) -> None:
        with self._lock:
            self._closed = True
            for worker in self._live:
                worker.proc.kill()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])
