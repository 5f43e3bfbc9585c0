"""Stop signals: SIGINT (Ctrl-C) and SIGTERM (what a CI timeout sends first) end a command at any
moment with exit 130, and a build still writes its reports.

They raise KeyboardInterrupt in the main thread once the command is armed; one that comes before
(while the command line loads and is read) waits until then. Once only: while the run stops and writes
its reports, or once they are written (`settle`), more signals change nothing.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    armed = settled = pending = False


def _handler(signum, frame) -> None:
    if _State.settled:
        return
    if not _State.armed:
        _State.pending = True
        return
    _State.settled = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def caught(early: list[int] | tuple = ()) -> Iterator[None]:
    """Within: stop signals are handled as above. `early`: signals caught before (trtbuild.__main__)."""
    _State.armed = _State.settled = False
    _State.pending = bool(early)
    previous = {}
    for signum in STOP_SIGNALS:
        try:
            previous[signum] = signal.signal(signum, _handler)
        except ValueError:  # not the main thread (an embedding application): its own handlers stay
            pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)


def arm() -> None:
    """From here on a signal stops the command; one that came before stops it now."""
    _State.armed = True
    if _State.pending and not _State.settled:
        _State.settled = True
        raise KeyboardInterrupt


def settle() -> None:
    """The outcome is final (the reports are written): a late signal no longer changes the exit code."""
    _State.settled = True
