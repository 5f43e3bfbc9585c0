"""Repro scripts: a Python file that runs one step again, by hand, for debugging a failure or attaching
to a bug report (as Polygraphy's --gen-script does). Written beside a failed step's log, or by
`trtbuild repro`.

The script runs the step's own code: the kind's run() through the worker's run_job, on the same job
(parameters, input files, context, the environment variables in its key), so it cannot drift from
what the step does, for the built-in kinds and plug-in ones alike. It names its inputs by absolute
path: the user's files where they are, and the step's upstream artifacts copied into the script's
folder (a copy: editing it cannot reach the cache). It imports the trtbuild that wrote it (that
checkout's folder goes first on sys.path), and the plug-in kind's module from where it was found.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import trtbuild
from trtbuild import __version__
from trtbuild.steps import load_kind

_SCRIPT = '''#!/usr/bin/env python3
"""{what}

Reproduces the trtbuild step {label} (trtbuild {version}) by running that step's own code
({module}.run) on the same job: the same parameters, input files and context. Its outputs go to the
current folder; it exits 1 where the step fails, printing the step's error (the traceback on stderr).
Run it with the Python environment that ran the build.
"""
import json
import sys

sys.path[:0] = json.loads({paths!r})  # the trtbuild that ran the build, and where its step kind was found
JOB = json.loads({job!r})

from trtbuild.execution.repro import reproduce  # noqa: E402

sys.exit(reproduce(JOB))
'''


def write_repro(job: dict, folder: Path, label: str, scratch: Path | None = None) -> Path:
    """Write folder/repro.py for `job` (the request a worker got); inputs under `scratch` (a step's
    temporary folder) are copied into `folder`, with the files staged beside each (an ONNX model's
    external data, an export's reference outputs)."""
    folder.mkdir(parents=True, exist_ok=True)
    inputs = {}
    for name, path in job["inputs"].items():
        path = Path(path)
        if scratch is not None and scratch in path.parents:
            kept = folder / name
            kept.mkdir(exist_ok=True)
            for part in path.parent.iterdir():  # its external data; an export's reference outputs
                if part.is_file():
                    shutil.copyfile(part, kept / part.name)
            path = kept / path.name
        inputs[name] = str(path)
    kind = load_kind(job["kind"])
    kept_job = {k: v for k, v in job.items() if k not in ("expect", "sources", "outdir")} | {"inputs": inputs}
    text = _SCRIPT.format(what=_summary(kind), label=label, version=__version__, module=kind.__name__,
                          paths=json.dumps(_paths(kind, job.get("registered", {}))), job=json.dumps(kept_job))
    script = folder / "repro.py"
    script.write_text(text)
    script.chmod(0o755)
    return script


def reproduce(job: dict) -> int:
    """Run `job` as a worker runs it, writing its outputs into the current folder: 0 when the step
    succeeds (its metadata printed), 1 when it fails (its error printed, the traceback on stderr)."""
    from trtbuild.execution.worker import run_job

    outdir = Path.cwd()
    result = run_job(job | {"outdir": str(outdir)})
    if result["ok"]:
        print(json.dumps(result["meta"], indent=2, default=str))
        print(f"{job['kind']}: done; its outputs are in {outdir}")
        return 0
    print(result["error"])
    if result.get("meta"):
        print(json.dumps(result["meta"], indent=2, default=str))
    return 1


def _summary(kind) -> str:
    """What the step does: the first paragraph of its kind's docstring."""
    doc = (kind.__doc__ or f"The {kind.NAME} step.").strip()
    return doc.split("\n\n")[0].replace('"""', "'''")


def _paths(kind, registered: dict) -> list[str]:
    """The folder holding this trtbuild, and those the plug-ins in use were found in (the step kind's
    module, a backend's or framework's: trtbuild_step_NAME, trtbuild_backend_NAME, trtbuild_framework_NAME,
    or what the job's `registered` names)."""
    paths = [str(Path(trtbuild.__file__).resolve().parent.parent)]
    plugins = [kind.__name__, *registered.get("kinds", {}).values(), *registered.get("backends", {}).values(),
               *(f["module"] for f in registered.get("frameworks", []))]
    plugins += [name for name in sys.modules if name.startswith(("trtbuild_step_", "trtbuild_backend_", "trtbuild_framework_"))]
    for module in dict.fromkeys(m for m in plugins if not m.startswith("trtbuild.")):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            continue
        origin = Path(spec.origin).resolve()
        root = str(origin.parents[module.count(".") + (origin.name == "__init__.py")])
        if root not in paths:
            paths.append(root)
    return paths

