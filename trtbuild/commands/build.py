"""`trtbuild build`: recipes -> steps -> the runner -> reports, results and the exit code (see
trtbuild.commands.cli for the command line)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from trtbuild.commands import signals
from trtbuild.commands.summary import print_results, recap
from trtbuild.errors import EXIT_BUILD_FAILED, EXIT_OK, RecipeError, UsageError


def recipe_files(paths: list[str]) -> list[Path]:
    files = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            with os.scandir(path) as entries:  # a folder's entries tell files apart without a stat each
                names = sorted(e.name for e in entries if e.name.endswith((".yaml", ".yml"))
                               and e.name not in (".yaml", ".yml") and _is_file(e))
            found = [path / name for name in names]
            if not found:
                raise UsageError(f"{path}: no *.yaml recipes in this directory")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such recipe file or directory")
    return files


def _is_file(entry: os.DirEntry) -> bool:
    """entry.is_file(), as Path.is_file answers where the entry raises (a link loop is no recipe)."""
    try:
        return entry.is_file()
    except OSError:
        return Path(entry.path).is_file()


def compile_recipes(args, cache, machine=None) -> tuple[list, list[str]]:
    """Steps of every valid recipe, plus the problems of the invalid ones."""
    from trtbuild.planning.graph import Remembered, ThisMachine, compile_recipe, no_collection
    from trtbuild.recipes.loader import load_recipe
    from trtbuild.recipes.paths import resolving_once

    steps, problems, names = [], [], {}
    remembered = Remembered(machine or ThisMachine)
    with no_collection(), resolving_once():
        for file in recipe_files(args.recipes):
            try:
                loaded = load_recipe(file, cache.recipes, cache.log)
                name = loaded.recipe.name
                if name in names:
                    raise RecipeError([f"{loaded.where('name')}: name: {name!r} is also the name of {names[name]}"])
                names[name] = file
                steps += compile_recipe(loaded, cache, args.backend, args.target, remembered)
            except RecipeError as exc:
                problems += exc.problems
            except UsageError as exc:
                problems.append(f"{file}: {exc}")
    return steps, problems


def _too_old(steps) -> list[str]:
    """A framework the exports use installed older than trtbuild supports (the GPU image's torch, say)."""
    from trtbuild.frontends.registry import framework

    used = dict.fromkeys(s.params["framework"] for s in steps if s.kind.NAME == "export")
    return [line for name in used for line in framework(name).too_old()]


def cmd_build(args) -> int:
    return build_outcome(args).exit_code


def build_outcome(args):
    """Build what `args` (the build command's options) names: the run's Outcome (commands.outcome), whose
    exit_code the command returns; the reports are written from it."""
    started = time.perf_counter()
    run = _Run()
    try:
        signals.arm()
        outcome = _build(args, run, started)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, at any moment: the reports say what each step got to
        from trtbuild.commands.outcome import decide
        from trtbuild.commands.reports import write_reports

        run.results = run.interrupted()
        outcome = decide(run.results, run.problems, time.perf_counter() - started, interrupted=True,
                         dry_run=args.dry_run)
        write_reports(args, outcome, args.cache_dir.resolve())
        signals.settle()
        print("trtbuild: interrupted; nothing partial was recorded, out/ keeps the last complete build",
              file=sys.stderr)
    return outcome


class _Run:
    """What a build has got to: its steps, recipe problems, runner."""

    def __init__(self):
        self.steps, self.problems, self.runner, self.results = [], [], None, None

    def interrupted(self) -> list:
        from trtbuild.execution.runner import INTERRUPTED, StepResult

        done = self.runner.results if self.runner is not None else {}
        return [done.get(s) or StepResult(s, INTERRUPTED, "the run was interrupted before it finished")
                for s in self.steps]


def _build(args, run: _Run, started: float):
    from trtbuild.execution.progress import Progress
    from trtbuild.execution.runner import Runner
    from trtbuild.store.cache import Cache

    progress = Progress(quiet=args.quiet)
    cache = Cache(args.cache_dir, progress.warn, make=not args.dry_run)
    cache.keep_log([str(Path(p).absolute()) for p in args.recipes] + [args.backend, *(args.target or [])])
    remote = None
    if args.remote:  # imported only then: a build without a remote cache needs none of it
        from trtbuild.store.remote import open_remote

        remote = open_remote(args.remote, progress.warn, args.remote_timeout)
    executor = None
    try:
        executor = executor_for(args, cache, progress.warn)
        machine = executor and executor.machine
        jobs = args.jobs or (executor.cpus if executor else 1)
        run.runner = Runner(cache, progress, jobs=jobs, dry_run=args.dry_run, remote=remote,
                            step_timeout=args.step_timeout, force=args.force, executor=executor)
        if cache.log is not None and not cache.log.path.exists():  # a first build of these recipes here:
            run.runner.warm_up()  # a worker starts while the recipes are read and planned
        run.steps, run.problems = compile_recipes(args, cache, machine)
        for problem in run.problems:
            print(problem, file=sys.stderr)
        for line in _too_old(run.steps):
            progress.warn(line)
        # A run of other targets than the recipes' (--target, --backend) leaves theirs in out/: the
        # runner publishes the current outputs of both.
        declared = compile_recipes(argparse.Namespace(**vars(args) | {"target": None, "backend": None}), cache,
                            machine)[0] if (args.target or args.backend) and run.steps and not args.dry_run else None
        run.results = run.runner.run(run.steps, declared) if run.steps else []
    finally:
        if run.runner is not None:
            run.runner.close()
        progress.close()
        if executor:
            executor.close()
    if run.runner is not None and run.runner.interrupted:
        raise KeyboardInterrupt
    return _conclude(args, cache, run, started, progress)


def _conclude(args, cache, run: _Run, started: float, progress):
    """The outcome (exit code and failures), then the reports, the recap and the results, all from it."""
    from trtbuild.commands.outcome import decide
    from trtbuild.commands.reports import write_reports

    # An engine asked for on the command line is a promise: not building it here is a failure. Targets
    # a recipe declares for other GPUs are skipped with the reason, and the build still succeeds.
    requested = "--target" if args.target else "--backend" if args.backend else None
    outcome = decide(run.results, run.problems, time.perf_counter() - started, requested=requested,
                     unpublished=run.runner.undelivered if run.runner is not None else [], dry_run=args.dry_run)
    if not write_reports(args, outcome, cache.root) and outcome.exit_code == EXIT_OK:
        outcome.exit_code = EXIT_BUILD_FAILED  # a report asked for and not written: not delivered
    signals.settle()
    recap(outcome, progress)
    print_results(outcome)
    return outcome


def executor_for(args, cache, warn):
    """The Ray executor for --executor ray, else None. A dry run asks the cluster too: what its nodes
    offer decides the targets, so the keys it shows are the ones a build would use."""
    if args.executor != "ray":
        return None
    try:
        import ray  # noqa: F401  (the executor's own import: a missing Ray is the user's to install)
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed: pip install 'trtbuild[ray]'") from None
    from trtbuild.execution.farm_executor import RayExecutor

    return RayExecutor(args.ray_address, args.remote, cache, warn)
