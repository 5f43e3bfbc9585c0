"""The node side of the build farm: what a Ray task does with one step.

Fetch the step's upstream inputs by digest from the store (the shared remote cache), run the step
with the same worker code as a local build, upload its outputs by digest, and return the worker's
result with the outputs' digests and the node's name. The driver records the result.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

from trtbuild.store.hashing import digest_written
from trtbuild.execution.pool import WorkerPool

_LOG_LIMIT = 1 << 20  # bytes of a step's log sent back to the driver
_pool: WorkerPool | None = None  # warm workers, reused by the tasks this Ray worker process runs


def run_step(payload: dict) -> dict:
    import ray

    from trtbuild.execution.executor import Task
    from trtbuild.store.remote import Remote

    context = ray.get_runtime_context()
    node = {"id": context.get_node_id(), "address": ray.util.get_node_ip_address()}
    store = Remote(payload["store"], warn=lambda message: None)
    job = dict(payload["job"])
    scratch = Path(tempfile.mkdtemp(prefix="trtbuild-farm-"))
    try:
        inputs = dict(job["inputs"])
        for name, files in payload["objects"].items():
            folder = scratch / f"in-{name}"
            folder.mkdir()
            for file, digest in files.items():
                if not store.get_object(digest, folder / file):
                    return _failed(node, f"input {name}/{file} on the remote cache does not match its digest")
            inputs[name] = str(folder / Path(job["inputs"][name]).name)
        missing = [path for name, path in inputs.items() if name not in payload["objects"] and not Path(path).exists()]
        if missing:
            return _failed(node, f"this node does not see {missing[0]}: every node needs the recipes' folder at "
                           "the same path (a shared volume or the same checkout)")
        outdir = scratch / "out"
        outdir.mkdir()
        job |= {"inputs": inputs, "outdir": str(outdir)}
        if "timing_cache" in job["context"]:  # the node's own, beside its scratch space
            job["context"] = job["context"] | {"timing_cache": str(Path(tempfile.gettempdir()) / "trtbuild-timing" /
                                                                   Path(job["context"]["timing_cache"]).name)}
        log = scratch / "step.log"
        # A task given a GPU runs in a process of its own: CUDA reads CUDA_VISIBLE_DEVICES (set by Ray
        # for this task) once per process.
        isolated = payload["isolated"] or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
        started = time.perf_counter()
        result = _workers().run(Task(job, log, isolated=isolated, spare=None, timeout=payload["timeout"]))
        result["node"] = node | {"seconds": round(time.perf_counter() - started, 3)}  # the step itself, on the node
        result["log"] = _tail_bytes(log)
        if result.get("ok"):
            result["outputs"], written = {}, result.pop("written", None) or {}
            for file in sorted(outdir.iterdir()):
                digest, _ = digest_written(file, written.get(file.name))
                store.put_object(file, digest)
                result["outputs"][file.name] = digest
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def warm_up() -> None:
    """Start a Ray worker process with this module and its imports loaded, and a step worker ready:
    what the first step on each node would otherwise wait for."""
    _workers().prestart()


def _workers() -> WorkerPool:
    global _pool
    if _pool is None:
        _pool = WorkerPool(1)
        atexit.register(_pool.close)
    return _pool


def _failed(node: dict, error: str) -> dict:
    return {"ok": False, "error": error, "user_error": False, "node": node, "log": ""}


def _tail_bytes(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - _LOG_LIMIT))
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
