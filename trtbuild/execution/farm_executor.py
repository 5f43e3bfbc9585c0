"""The Ray executor: each stale step becomes a Ray task on a node that can run it (trtbuild.execution.farm_task).

Before submitting, the step's needs are checked against the alive nodes: Ray leaves a task no node
can take pending forever, so such a step fails at once with what it needs. A task whose node dies
is retried elsewhere by Ray (max_retries); when no node that could run it is left, it fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

from trtbuild.errors import UsageError
from trtbuild.store.fsutil import write_new
from trtbuild.execution.executor import Task
from trtbuild.execution.farm import FarmMachine, needs, this_node, what_it_needs
from trtbuild.execution.farm_task import run_step, warm_up
from trtbuild.steps.action import toolchain

_RETRIES = 2  # a node that dies mid-step: the step runs again elsewhere, this many times at most
_POLL = 1.0  # seconds between checks that a pending task can still be placed


class RayExecutor:
    checks_sources = True  # a node digests the user files it sees before it runs a step (steps.action)

    def __init__(self, address: str | None, store_url: str | None, cache, warn):
        import ray

        from trtbuild.store.remote import Remote

        self._ray = ray
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.cache = cache
        self._lock = threading.Lock()
        self._running: set = set()
        self._warm = False
        if self.address:  # a cluster: what its nodes offer decides the targets, so ask it now
            self._connect()
            nodes = self._alive()
            self.machine = FarmMachine(self._offered(nodes))
            if len(nodes) > 1 and not store_url:
                ray.shutdown()
                raise UsageError(f"--executor ray: the cluster at {self.address} has {len(nodes)} nodes, which share "
                                 "steps' files through a remote cache: add --remote URL (file:// on a shared file "
                                 "system, s3://, gs://)")
        else:  # a local Ray instance offering what this machine has, started when a step first runs
            self.machine = FarmMachine(this_node())
        # One node (this machine): steps' files travel through a folder in the local cache.
        self._scratch = None if store_url else cache.root / "farm-store"
        self.store = Remote(store_url or self._scratch.resolve().as_uri(), warn)
        self._remote_run = ray.remote(run_step)

    def _connect(self) -> None:
        started_here = {} if self.address else {"include_dashboard": False, "resources": this_node()}
        if not self.address:  # Ray's notices about an instance that lives as long as this run (its
            # token auth, a SIGTERM handler it cannot set from a step's thread) are not the user's concern
            logging.getLogger("ray").setLevel(logging.ERROR)
        if self.address and self.address not in ("auto", "local"):
            _reachable(self.address)  # Ray retries a refused address for minutes, printing only its warnings
        try:  # "local": a new instance, even when `ray start` left one running on this machine
            self._ray.init(address=self.address or "local", logging_level="ERROR", log_to_driver=False, configure_logging=False,
                           **started_here)
        except ConnectionError as exc:
            raise UsageError(f"--executor ray: cannot reach the Ray cluster at {self.address}: {exc}") from None

    def _ensure_connected(self) -> None:
        """Connected (a local instance starts here), and the nodes warming up, before the first step."""
        with self._lock:
            if not self._ray.is_initialized():
                self._connect()
            if not self._warm:
                self._warm = True
                self._warm_up()

    def _warm_up(self) -> None:
        """One task per CPU node, not waited for: Ray starts a worker process for this run on each, which
        loads trtbuild and a step worker while the first steps are planned and run."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        warm = self._ray.remote(warm_up)
        for node in self._alive():
            if node["Resources"].get("CPU", 0) >= 1:
                warm.options(num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
                             ).remote()

    @property
    def cpus(self) -> int:
        """How many steps may run at once: the cluster's CPUs (this machine's, before a local start)."""
        if self._ray.is_initialized():
            return int(self._ray.cluster_resources().get("CPU", 1))
        return os.cpu_count() or 1

    def run(self, task: Task) -> dict:
        self._ensure_connected()
        kind = task.job["kind"]
        resources, gpus = needs(task.target, kind, self.machine, task.precision)
        code = self.machine.code_need()
        if code and not self._placeable(code, 0):
            return {"ok": False, "user_error": False,
                    "error": f"no node of the Ray cluster runs this trtbuild (code version {toolchain()}; the nodes "
                             f"run {', '.join(self.machine.other_code())}): install the same trtbuild and tools on "
                             "the nodes and start them with the options `trtbuild ray-node` prints"}
        if not self._placeable(resources, gpus):
            return {"ok": False, "user_error": False,
                    "error": f"no node of the Ray cluster can run {task.label} for {task.target.spec}: it needs "
                             f"{what_it_needs(task.target, kind)}; `trtbuild ray-node` on such a machine prints "
                             "the `ray start` options that offer it"}
        for files in task.objects.values():  # upstream outputs, by content, where the nodes can fetch them
            for digest in files.values():
                self.store.put_object(self.cache.object_path(digest), digest)
        payload = {"job": task.job, "objects": task.objects, "store": self.store.url, "isolated": task.isolated,
                   "timeout": task.timeout}
        ref = self._remote_run.options(num_cpus=1, num_gpus=gpus, resources=resources, max_retries=_RETRIES,
                                       scheduling_strategy="SPREAD").remote(payload)  # spread over the farm
        with self._lock:
            self._running.add(ref)
        try:
            result = self._wait(ref, resources, gpus)
        finally:
            with self._lock:
                self._running.discard(ref)
        write_new(task.log, result.pop("log", "") or "")  # never through a link another user put there
        for name, digest in result.pop("outputs", {}).items():
            if not self.store.get_object(digest, Path(task.job["outdir"]) / name):
                return {"ok": False, "error": f"output {name} on the remote cache does not match its digest",
                        "node": result.get("node")}
        return result

    def _wait(self, ref, resources: dict, gpus: int) -> dict:
        ray = self._ray
        while True:
            done, _ = ray.wait([ref], timeout=_POLL)
            if done:
                try:
                    return ray.get(ref)
                except ray.exceptions.TaskCancelledError:
                    return {"ok": False, "error": "cancelled"}
                except ray.exceptions.RayError as exc:  # its node died more often than it was retried
                    return {"ok": False, "error": f"the Ray task failed: {type(exc).__name__}: {str(exc)[:500]}"}
            if not self._placeable(resources, gpus):
                ray.cancel(ref, force=True)
                return {"ok": False, "error": "the nodes that could run it left the cluster before it finished"}

    def _placeable(self, resources: dict, gpus: int) -> bool:
        wanted = {"CPU": 1, **resources, **({"GPU": gpus} if gpus else {})}
        return any(all(node["Resources"].get(name, 0) >= amount for name, amount in wanted.items())
                   for node in self._alive())

    def _alive(self) -> list[dict]:
        return [node for node in self._ray.nodes() if node["Alive"]]

    @staticmethod
    def _offered(nodes: list[dict]) -> dict[str, float]:
        offered: dict[str, float] = {}
        for node in nodes:
            for name, amount in node["Resources"].items():
                offered[name] = max(offered.get(name, 0), amount)
        return offered

    def kill_all(self) -> None:
        with self._lock:
            running = list(self._running)
        for ref in running:
            self._ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._ray.is_initialized():
            self._ray.shutdown()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _reachable(address: str, seconds: float = 10.0) -> None:
    """Refuse at once an address nothing answers at (HOST:PORT, or ray://HOST:PORT)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=seconds).close()
    except (OSError, ValueError) as exc:
        raise UsageError(f"--executor ray: cannot reach the Ray cluster at {address}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
