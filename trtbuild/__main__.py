"""`python -m trtbuild` and the `trtbuild` command. A stop signal is caught from the first line on:
one that comes while the command line loads still ends the run with exit 130 and its reports; one
that comes once the outcome is final changes nothing, interpreter teardown included (Python hands
SIGINT back to the system's default there, which would kill the process after its reports said 0)."""

import signal

_STOP = {signal.SIGINT, signal.SIGTERM}


def run() -> int:
    early: list[int] = []
    for signum in _STOP:
        signal.signal(signum, lambda signum, frame: early.append(signum))
    from trtbuild.commands.cli import main
    from trtbuild.errors import EXIT_INTERRUPTED

    try:
        code = main(early_signals=early)
    except KeyboardInterrupt:  # a stop the command could not answer itself: still an interruption
        code = EXIT_INTERRUPTED
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)  # final: blocked signals die with the process
    return code


if __name__ == "__main__":
    raise SystemExit(run())
