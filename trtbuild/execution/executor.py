"""Where a step runs: one small interface, two implementations.

The runner plans, keys, locks, records and reports; an executor only runs a step's job somewhere
that can and leaves its outputs in the job's `outdir` (ninja's CommandRunner). The local worker
pool (trtbuild.execution.pool) runs jobs in processes on this machine; the Ray executor (trtbuild.execution.farm) on
the nodes of a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Task:
    job: dict  # what trtbuild.execution.worker runs; its inputs are paths on this machine
    log: Path  # where the step's output goes
    isolated: bool = False  # a process of its own (user code, a pinned GPU)
    spare: tuple[str, ...] | None = ()  # modules the steps still to come import; None: none follow
    imports: tuple[str, ...] = ()  # modules this step imports: a worker that loaded them is taken first
    timeout: float | None = None  # seconds
    label: str = ""  # recipe/step, for messages
    # Cluster executors: upstream inputs by content, {input name: {file name: digest}} (the job's paths
    # for them are links into this machine's cache), and the step's target (routing), if any.
    objects: dict[str, dict[str, str]] = field(default_factory=dict)
    target: object = None
    precision: str = "fp32"
    # Set when the step is no longer wanted (a gate it ran ahead of failed): an executor with cancel()
    # starts no job for it, or stops the one running.
    cancelled: object = None  # threading.Event | None


class Executor:
    """What the runner asks of an executor (a protocol: implementations need not subclass it)."""

    def run(self, task: Task) -> dict:
        """Run the task's job; its outputs land in job["outdir"]. Returns the worker's result
        ({"ok", "meta", "error", "user_error"}), plus "node" where the executor knows it."""

    def kill_all(self) -> None:
        """Stop every running job now (the run was interrupted)."""

    # Optional: cancel(task), stop that task's job now (its `cancelled` is set first). The runner starts
    # steps ahead of their gates (trtbuild.execution.ahead) only on an executor that has it.

    def close(self) -> None:
        """Release idle resources after the last step."""
