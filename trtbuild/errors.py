"""Errors that reach the user as a message, not a traceback."""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class TrtbuildError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback."""

    exit_code = EXIT_BUILD_FAILED


class UsageError(TrtbuildError):
    """Bad command line, bad recipe, or a recipe that does not match its model."""

    exit_code = EXIT_USAGE


class RecipeError(UsageError):
    """One or more problems in a recipe, each located at file:line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class StepError(TrtbuildError):
    """A step failed while running; `user_error` marks failures caused by the recipe.

    `details` (numbers behind the failure, such as parity errors) go into the report.
    """

    def __init__(self, message: str, user_error: bool = False, details: dict | None = None):
        super().__init__(message)
        self.user_error = user_error
        self.details = details or {}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch colours some of its errors


def plain(text: str) -> str:
    """`text` without terminal colour codes: reports and recaps are read as plain text."""
    return _ANSI.sub("", text)


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (its type's name when it has none): libraries' errors run long."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
