"""`python -m trtbuild` and the `trtbuild` command. A stop signal is caught from the first line on:
one that comes while the command line loads still ends the run with exit 130 and its reports."""

import signal


def run() -> int:
    early: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: early.append(signum))
    from trtbuild.commands.cli import main

    return main(early_signals=early)


if __name__ == "__main__":
    raise SystemExit(run())
