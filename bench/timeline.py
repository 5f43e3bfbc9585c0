"""Where a cold build of the eight small engines spends its time: one line per event, in seconds from the
start of the command, from the runner (workers started, steps handed to build threads, each step's start
and end) and from each worker process (interpreter up, trtbuild's worker module imported, each job's
start and end), with the CPU time of the runner and of its workers at the end.

    python bench/timeline.py [-j 2] [--repeat 3] [--source DIR]

Runs the command in this process (`python -m trtbuild` would start the same way) with timers wrapped
around the runner's functions; the workers get a boot line that times them. --source DIR: the trtbuild
package in DIR (another checkout). The last run's timeline is printed, and every run's wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, compile_bytecode

TRACED = r'''
import os, sys, time, resource
T0, LOG = time.time(), sys.argv[1]
def ev(what):
    with open(LOG, "a") as f:
        f.write(f"{time.time() - T0:7.3f}  runner  {what}\n")
from trtbuild.execution import pool, step_build
pool._BOOT = ("import time; _t = time.time(); import os, sys; sys.path[:] = sys.argv[1].split(os.pathsep)\n"
    f"T0, LOG = {T0!r}, {LOG!r}\n"
    "def ev(w):\n with open(LOG, 'a') as f: f.write(f'{time.time() - T0:7.3f}  w{os.getpid():<6} {w}\\n')\n"
    "ev(f'python up (started {_t - T0:.3f})')\n"
    "import trtbuild.execution.worker as W\n"
    "ev('worker module imported')\n"
    "_run = W.run_job\n"
    "def run_job(spec, last=False):\n"
    " ev('job start ' + spec['kind']); r = _run(spec, last); ev('job end ' + spec['kind']); return r\n"
    "W.run_job = run_job\n"
    "sys.exit(W.main(sys.argv[2:]))")
_init = pool.Worker.__init__
def init(self, preload=()):
    ev(f"start a worker, loading {', '.join(preload) or 'nothing'}")
    _init(self, preload)
pool.Worker.__init__ = init
_execute = step_build.StepBuild._execute
def execute(self, step, *args, **kwargs):
    ev(f"begin {step.label}")
    result = _execute(self, step, *args, **kwargs)
    ev(f"end   {step.label}: {result.status}")
    return result
step_build.StepBuild._execute = execute
from trtbuild.commands.cli import main
code = main(sys.argv[2:])
self, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
ev(f"done: exit {code}; CPU: runner {self.ru_utime + self.ru_stime:.2f} s, "
   f"workers {children.ru_utime + children.ru_stime:.2f} s")
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--source", type=Path, help="a directory holding the trtbuild package to time")
    args = parser.parse_args()
    compile_bytecode()
    from vs_script import engine_recipes, small_model

    work = Path(tempfile.mkdtemp(prefix="trtbuild-timeline-"))
    try:
        recipes = engine_recipes(work, small_model(work))
        log, script = work / "timeline.log", work / "traced.py"
        script.write_text(TRACED)
        env = os.environ | {"PYTHONPATH": str((args.source or REPO).resolve())}
        for i in range(args.repeat):
            shutil.rmtree(work / "cache", ignore_errors=True)
            log.write_text("")
            started = time.perf_counter()
            subprocess.run([sys.executable, str(script), str(log), str(recipes), "--cache-dir", str(work / "cache"),
                            "-q", "-j", str(args.jobs)], cwd=work, env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"run {i + 1}: {time.perf_counter() - started:.2f} s wall (interpreter start included)")
        print(log.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
