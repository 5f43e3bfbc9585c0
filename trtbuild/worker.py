"""Runs one step in its own process, so a TensorRT crash or out-of-memory fails that step, not the run.

Usage (by the runner): python -m trtbuild.worker JOB.json RESULT.json
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from trtbuild.errors import StepError
from trtbuild.steps import Job, load_kind


def _exit_with_parent() -> None:
    """If the runner is killed, stop too instead of building for nobody."""
    parent = os.getppid()

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(137)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _brief(text: str, lines: int = 12) -> str:
    """Long library errors (torch.export's run to pages) end with their summary: keep the end."""
    kept = text.strip().splitlines()
    if len(kept) <= lines:
        return "\n".join(kept)
    return "\n".join(["(shortened; the full error is in the log)", *kept[-lines:]])


def main(job_file: str, result_file: str) -> int:
    _exit_with_parent()
    spec = json.loads(Path(job_file).read_text())
    job = Job(
        kind=spec["kind"],
        params=spec["params"],
        inputs={name: Path(p) for name, p in spec["inputs"].items()},
        outdir=Path(spec["outdir"]),
        context=spec["context"],
    )
    try:
        meta = load_kind(job.kind).run(job)
        result = {"ok": True, "meta": meta}
    except StepError as exc:
        result = {"ok": False, "error": str(exc), "user_error": exc.user_error, "meta": exc.details}
    except Exception as exc:  # an unexpected failure: the full traceback goes to the step log
        traceback.print_exc()
        result = {"ok": False, "error": _brief(f"{type(exc).__name__}: {exc}"), "user_error": False}
    Path(result_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
