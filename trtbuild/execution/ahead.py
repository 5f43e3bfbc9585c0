"""A step started ahead of its gates: it builds on a free worker while the steps it waits on only to pass
(a check, parity, an accuracy gate: trtbuild.planning.nodes.Step.after) still run, and is kept only once
they have passed.

Its key never depends on a gate (a gate's outputs are not its inputs), so the build is the one it would
have been; what the gate decides is whether it may be *kept*. The step build waits for the verdict before
it records anything (no action record, no state, nothing on the remote or in out/): a gate that fails or
is skipped turns the step into the skip it would have been had it waited, and cancels its job if that
still runs (the worker is killed: a failed check on a large model does not wait for its engine).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Ahead:
    def __init__(self, gates: list, verdict: Callable[[], object]):
        self.gates = gates  # the gate steps still running when the step started
        self._verdict = verdict  # blocks until every gate ended: None when all passed, else the step's result
        self.cancelled = threading.Event()  # set when a gate failed: its job is not started, or is killed

    def verdict(self):
        """None when every gate passed; else the result the step takes instead of its own (skipped because a
        gate did not complete, or interrupted). Blocks until the gates have ended."""
        return self._verdict()

    @property
    def names(self) -> str:
        return ", ".join(g.name for g in self.gates)
