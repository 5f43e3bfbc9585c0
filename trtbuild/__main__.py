import signal


def _early_stop(signum, frame):  # until the command line takes over (trtbuild.commands.cli.main)
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _early_stop)

from trtbuild.commands.cli import main  # noqa: E402

raise SystemExit(main())
