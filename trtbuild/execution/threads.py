"""The runner's build threads: each waits on one step's worker. They block SIGINT / SIGTERM, and so do
the workers they start (a blocked signal stays blocked across exec): the main thread handles a stop."""

from __future__ import annotations

import signal


class BuildThreads:
    """The build threads, started with the first step a lookup does not settle: a no-op build starts
    none and imports no concurrent.futures (with logging, a few ms of every run)."""

    def __init__(self, jobs: int):
        self.jobs, self._pool = jobs, None

    def submit(self, fn):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.jobs, initializer=block_stop_signals)
        return self._pool.submit(fn)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown(wait=True)


def block_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
