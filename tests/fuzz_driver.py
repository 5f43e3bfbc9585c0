"""Runs fuzz cases through the real CLI, in-process, one after another, under an address-space limit and a
per-case alarm; one JSON line per case on stdout. tests/test_fuzz.py starts it, restarts it past a case
that killed it, and judges the results.

    python tests/fuzz_driver.py CASES.json FIRST MEMORY_BYTES
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback


class Hang(BaseException):
    """The case ran past its time limit (raised from SIGALRM, past `except Exception`)."""


def _alarm(signum, frame):
    raise Hang()


def run_case(case: dict, cache: str) -> dict:
    from trtbuild.commands.cli import main

    args = [case["recipe"], "--cache-dir", cache, "--report", os.path.join(cache, "report.json")]
    if not case["build"]:
        args.append("--dry-run")
    else:
        args += ["--step-timeout", str(case["limit"])]
    err, out = io.StringIO(), io.StringIO()
    result = {"id": case["id"], "kind": case["kind"], "build": case["build"]}
    started = time.monotonic()
    signal.alarm(case["limit"])
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            result["code"] = main(args)
    except Hang:
        result["outcome"] = "hang"
    except SystemExit as exc:
        result["code"] = exc.code
    except BaseException:  # a traceback is the defect the fuzz looks for
        result["outcome"] = "traceback"
        err.write(traceback.format_exc())
    finally:
        signal.alarm(0)
    result["seconds"] = round(time.monotonic() - started, 3)
    result["stderr"] = err.getvalue()[-4000:]
    result["maxrss_kb"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return result


def main(argv: list[str]) -> int:
    cases_file, first, memory = argv[0], int(argv[1]), int(argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))  # the workers a build starts inherit it
    signal.signal(signal.SIGALRM, _alarm)
    with open(cases_file) as f:
        spec = json.load(f)
    replies = os.fdopen(os.dup(1), "w")
    for i in range(first, len(spec["cases"])):
        replies.write(json.dumps({"start": i}) + "\n")
        replies.flush()
        result = run_case(spec["cases"][i], spec["cache"])
        replies.write(json.dumps(result) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
