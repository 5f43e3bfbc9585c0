"""Progress lines: colors and a live line of running steps on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time

_STYLE = {"built": "green", "cached": "dim", "failed": "bold red", "skipped": "yellow", "would-run": "cyan",
          "would-pull": "blue", "interrupted": "bold yellow"}


class Progress:
    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._lock = threading.Lock()
        self._running: dict[str, float] = {}  # step name -> when it started
        self._console = self._status = None
        if self.stream.isatty():
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)

    def started(self, step, reason: str) -> None:
        with self._lock:
            self._running[_name(step)] = time.monotonic()
            if self._console:
                self._refresh()
            elif not self.quiet:
                print(f"  {'start':<10} {_name(step)}  ({reason})", file=self.stream, flush=True)

    def waiting(self, step, why: str) -> None:
        self._line("waiting", f"{_name(step)}  ({why})", "yellow")

    def finished(self, result) -> None:
        with self._lock:
            self._running.pop(_name(result.step), None)
            if self._console:
                self._refresh()
        if self.quiet and (result.status in ("cached", "would-run", "would-pull") or
                           (result.status == "skipped" and result.step.skip_reason)):
            return  # -q: what changed; a step this machine never runs (verify without a GPU) is no news
        seconds = f"{result.seconds:6.2f}s" if result.seconds else " " * 7
        self._line(result.status, f"{_name(result.step)}  {seconds}  {result.reason}", _STYLE.get(result.status))
        if result.status == "built":  # a step's warnings are printed when it runs; the report keeps them
            for warning in ((result.record or {}).get("meta") or {}).get("warnings", []):
                self._line("", f"      warning: {warning}", "yellow")
        if result.error:
            detail = "\n".join("      " + line for line in result.error.splitlines())
            self._line("", detail, "red")
            if result.log:
                self._line("", f"      log: {result.log}", "dim")
            if result.repro:
                self._line("", f"      repro: {result.repro}", "dim")

    def warn(self, text: str) -> None:
        self._line("", f"trtbuild: warning: {text}", "yellow", indent=False)

    def message(self, text: str, style: str | None = None) -> None:
        self._line("", text, style, indent=False)

    def close(self) -> None:
        with self._lock:
            if self._status:
                self._status.stop()
                self._status = None

    def _line(self, status: str, text: str, style: str | None, indent: bool = True) -> None:
        line = f"  {status:<10} {text}" if indent and status else text
        with self._lock:
            if self._console:
                from rich.markup import escape

                self._console.print(f"[{style}]{escape(line)}[/]" if style else escape(line), soft_wrap=True)
            else:
                print(line, file=self.stream, flush=True)

    def _refresh(self) -> None:
        if not self._running:
            if self._status:
                self._status.stop()
                self._status = None
            return
        if self._status is None:  # rich re-renders the line several times a second: the seconds tick
            self._status = self._console.status(_Running(self._running))
            self._status.start()


class _Running:
    """The live line: each running step with its target and seconds so far (escaped: a target id's
    brackets are not markup)."""

    def __init__(self, running: dict[str, float]):
        self.running = running

    def __rich__(self) -> str:
        from rich.markup import escape

        now = time.monotonic()
        return "building " + ", ".join(f"{escape(name)} {now - started:.0f}s"
                                       for name, started in list(self.running.items()))


def _name(step) -> str:
    return step.label + (f" [{step.target.id}]" if step.target else "")
