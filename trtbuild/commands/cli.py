"""Command line: a thin layer over recipe loading, graph compilation and the runner."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

from trtbuild import __version__
from trtbuild.commands import maintenance as commands
from trtbuild.errors import EXIT_BUILD_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, TrtbuildError, UsageError
from trtbuild.commands.arguments import (backend_name, forced_kind, index, positive, positive_seconds, remote_seconds,
                                         step_kind, step_kinds, target_spec)
from trtbuild.commands import signals
from trtbuild.commands.build import cmd_build, compile_recipes, executor_for

COMMANDS = ("build", "status", "dag", "repro", "gc", "schema", "env", "path", "ray-node", "triton")

DESCRIPTION = """\
Build TensorRT engines from YAML recipes, rebuilding only what is stale.

  trtbuild RECIPE_OR_DIR...          build (a directory means every *.yaml / *.yml in it)
  trtbuild status RECIPE_OR_DIR...   recipe x target matrix: fresh / remote / stale (why) / missing / failed
  trtbuild dag RECIPE_OR_DIR...      the step graph with each step's state (Mermaid; --dot for Graphviz)
  trtbuild repro RECIPE STEP         write a script that runs STEP again on the same job (for bug reports)
  trtbuild gc                        bound the cache (--keep-last N, --older-than 30d, --max-size 50GiB)
  trtbuild schema                    print the recipe JSON Schema
  trtbuild env                       GPUs, TensorRT backends, frameworks and precisions found here
  trtbuild path NAME                 the plan of recipe NAME for this GPU and TensorRT version
  trtbuild triton RECIPE_OR_DIR... --repository DIR
                                     a Triton model repository from the built plans (never builds)
  trtbuild ray-node                  the `ray start` options offering this machine to a build farm
                                     (then: trtbuild RECIPES --executor ray --remote URL)

Each recipe compiles into steps: export -> check -> parity -> simplify -> precision -> accuracy
-> engine -> verify (export and parity for framework models; precision and accuracy for fp16,
bf16, int8 and fp8). Each is keyed by a hash of its inputs, parameters, tool versions and target;
only steps whose key changed run. Outputs appear under CACHE/out/NAME/.
`trtbuild COMMAND --help` describes each command's options.
Exit codes: 0 built or cached, 1 a step failed or an output was not delivered to out/, 2 bad usage or
bad recipe, 130 interrupted (Ctrl-C, SIGTERM).
"""


def main(argv: list[str] | None = None, early_signals: list[int] | tuple = ()) -> int:
    """The command line. `early_signals`: stop signals caught before it was loaded (trtbuild.__main__)."""
    with signals.caught(early_signals):  # a signal at any moment of the run ends it with exit 130
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "build")  # `trtbuild recipes/` and `trtbuild -j 2 recipes/` mean build
    try:
        parser = _parser(only=argv[0] if argv and argv[0] == "build" else None)
        if not argv:
            parser.print_help()
            return EXIT_USAGE
        args = parser.parse_args(argv)
        if args.func is not cmd_build:  # a build is armed inside, where it writes its reports
            signals.arm()
        return args.func(args)
    except TrtbuildError as exc:
        print(f"trtbuild: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("trtbuild: interrupted; nothing partial was recorded", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a folder it was told to use cannot be (a file, /proc, no permission): unusable here
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"trtbuild: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BUILD_FAILED
    finally:
        gc.unfreeze()  # what compiling recipes froze (trtbuild.planning.graph.no_collection) is collectable again


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; `only="build"`: the build command alone (what a build parses; the others'
    options cost a no-op build a few ms)."""
    parser = argparse.ArgumentParser(
        prog="trtbuild", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"trtbuild {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    cache_opt = argparse.ArgumentParser(add_help=False)
    cache_opt.add_argument(
        "--cache-dir", type=Path, default=Path(os.environ.get("TRTBUILD_CACHE_DIR", "cache")),
        help="cache directory (env TRTBUILD_CACHE_DIR, default ./cache)",
    )
    graph_opt = argparse.ArgumentParser(add_help=False)
    graph_opt.add_argument("recipes", nargs="+", metavar="RECIPE_OR_DIR",
                           help="recipe files, or directories of *.yaml / *.yml recipes")
    graph_opt.add_argument("--backend", type=backend_name, metavar="BACKEND",
                           help="override engine.backend: auto, a registered backend (tensorrt, tensorrt-rtx) or a "
                           "module trtbuild_backend_NAME's NAME")
    graph_opt.add_argument(
        "--target", action="append", type=target_spec, metavar="SPEC",
        help='build these targets instead of the recipes\' (repeatable): "tensorrt-rtx", "tensorrt-rtx:sm86+sm120", '
        '"tensorrt:sm86"',
    )

    remote_opt = argparse.ArgumentParser(add_help=False)
    remote_opt.add_argument(
        "--remote", default=os.environ.get("TRTBUILD_REMOTE"), metavar="URL",
        help="shared cache (env TRTBUILD_REMOTE): file:///path, s3://bucket/prefix, gs://...; a build pulls the steps "
        "found there instead of building them and pushes new ones; status and --dry-run show them as remote",
    )
    remote_opt.add_argument(
        "--remote-timeout", type=remote_seconds, default=os.environ.get("TRTBUILD_REMOTE_TIMEOUT") or None,
        metavar="S", help="seconds to connect, and between bytes read, on each remote call (env "
        "TRTBUILD_REMOTE_TIMEOUT, default 10); a remote that stalls past it is left alone for the rest of the run",
    )

    executor_opt = argparse.ArgumentParser(add_help=False)
    executor_opt.add_argument(
        "--executor", choices=["local", "ray"], default="local",
        help="where steps run: worker processes here (default), or tasks on a Ray cluster (RAY_ADDRESS or "
        "--ray-address; a local Ray instance when none is given; a multi-node cluster needs --remote). With ray, "
        "targets resolve against what the cluster's nodes offer")
    executor_opt.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster for --executor ray (beats RAY_ADDRESS)")

    build = sub.add_parser("build", parents=[graph_opt, cache_opt, remote_opt, executor_opt],
                           help="build recipes (the default command)",
                           description="Build recipes; only steps whose key changed run.")
    build.add_argument("-j", "--jobs", type=positive, metavar="N",
                       help="run up to N independent steps at once (default 1; with --executor ray, the cluster's CPUs)")
    build.add_argument("--force", nargs="?", const="all", type=forced_kind, metavar="STEP",
                       help="run steps even when cached (all of them, or one kind: --force engine); "
                       "the new result replaces the cached one")
    build.add_argument("-n", "--dry-run", action="store_true", help="say which steps would run and why; build nothing")
    build.add_argument("--report", type=Path, metavar="PATH", help="write a JSON report of every step")
    build.add_argument("--junit", type=Path, metavar="PATH", help="write JUnit XML (a testcase per recipe x step)")
    build.add_argument("--markdown", type=Path, metavar="PATH", help="write a Markdown summary (for a CI job page)")
    build.add_argument("--step-timeout", type=positive_seconds, metavar="SECONDS",
                       help="kill a step's worker after SECONDS and fail that step (a hung loader or build); "
                       "beats each recipe's step_timeout")
    build.add_argument("-q", "--quiet", action="store_true", help="print only steps that ran or failed, and those skipped because an earlier one did not complete")
    build.set_defaults(func=cmd_build)
    if only == "build":
        return parser

    status = sub.add_parser("status", parents=[graph_opt, cache_opt, remote_opt, executor_opt],
                            help="show fresh / stale / missing per step",
                            description="Show whether each step's cached result is fresh, on the remote cache, "
                            "stale (and why) or missing.")
    status.add_argument("--json", action="store_true", help="machine-readable output (matrix and steps)")
    status.add_argument("--steps", action="store_true", help="one line per step instead of the recipe x target matrix")
    status.set_defaults(func=cmd_status)

    dag = sub.add_parser("dag", parents=[graph_opt, cache_opt, remote_opt, executor_opt],
                         help="print the step graph with each step's state",
                         description="Print the step graph of the recipes with each step's state (fresh, stale and "
                         "why, missing, failed, remote, skipped) as Mermaid, which renders in GitHub job summaries and "
                         "Markdown files, or as Graphviz dot.")
    dag.add_argument("--dot", action="store_true", help="Graphviz dot instead of Mermaid (`| dot -Tsvg > dag.svg`)")
    dag.set_defaults(func=cmd_dag)

    repro = sub.add_parser("repro", parents=[cache_opt], help="write a script that reproduces a step",
                           description="Write a Python script that runs STEP's own code on the same job (its "
                           "parameters, input files and context; upstream artifacts copied beside it), writing its "
                           "outputs into the folder it runs in, and print its path. Steps before it must be built. A "
                           "failed step gets one beside its log by itself.")
    repro.add_argument("recipe", metavar="RECIPE", help="the recipe file")
    repro.add_argument("step", type=step_kind, metavar="STEP",
                       help=f"one of: {', '.join(step_kinds())}, or a plug-in kind the recipe's steps names")
    repro.add_argument("--target", type=target_spec, metavar="SPEC", help="for engine / verify: which target")
    repro.set_defaults(func=cmd_repro)

    gc = sub.add_parser("gc", parents=[cache_opt, remote_opt], help="bound the cache: retire old results, delete what nothing names",
                        description="Retire old action records as the options say (never those of each recipe's last "
                        "build or of what out/ shows), then delete objects no record names and scratch files left by "
                        "killed runs. Waits for running builds. With DIR...: keep what the recipes there make now "
                        "(every target) and retire everything else, out/ of recipes that no longer exist included. "
                        "On a remote, unreferenced objects are marked, and deleted by a gc at least --grace later.")
    gc.add_argument("recipes", nargs="*", metavar="DIR", help="recipe files or folders: the recipes in use")
    gc.add_argument("--grace", default="1h", metavar="AGE", help="remote: how long a marked object waits (default 1h)")
    gc.add_argument("--keep-last", type=positive, metavar="N", help="keep the N newest results per recipe x step x target")
    gc.add_argument("--older-than", metavar="AGE", help="retire results made more than AGE ago (30d, 12h, 90m)")
    gc.add_argument("--max-size", metavar="SIZE", help="retire the least recent results until what the cache holds (objects, out/, logs) fits (50GiB); says what it could not free")
    gc.add_argument("-n", "--dry-run", action="store_true", help="say what would be removed; remove nothing")
    gc.set_defaults(func=commands.cmd_gc)

    ray_node = sub.add_parser("ray-node", help="print the `ray start` options that offer this machine to a build farm",
                              description="Print the `ray start` options (custom resources) that tell a Ray cluster "
                              "what this machine builds and runs: TensorRT-RTX engines, full TensorRT engines per GPU "
                              "architecture, GPUs to run engines on. Found from the installed backends and NVML.")
    ray_node.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), metavar="ADDR",
                          help="the head node to join (env RAY_ADDRESS); without it, options for a head node")
    ray_node.set_defaults(func=commands.cmd_ray_node)

    schema = sub.add_parser("schema", help="print the recipe JSON Schema (for editor completion)")
    schema.set_defaults(func=cmd_schema)

    env = sub.add_parser("env", help="show GPUs, backends and frameworks found on this machine")
    env.add_argument("--json", action="store_true", help="machine-readable output")
    env.set_defaults(func=commands.cmd_env)

    path = sub.add_parser("path", parents=[cache_opt], help="print the plan for this machine's GPU and TensorRT",
                          description="Print the plan built for recipe NAME that runs on this machine's GPU with the "
                          "installed TensorRT; exit 1 with what exists when none does.")
    path.add_argument("name", metavar="NAME", help="recipe name")
    path.add_argument("--gpu", type=index, default=0, metavar="INDEX", help="GPU index (default 0)")
    path.add_argument("--target", type=target_spec, metavar="SPEC",
                      help="the plan of this target instead (\"tensorrt-rtx\", \"tensorrt:sm86\"), on any machine")
    path.set_defaults(func=commands.cmd_path)

    triton = sub.add_parser("triton", parents=[cache_opt], help="write a Triton model repository from the built plans",
                            description="For each recipe, write REPOSITORY/NAME/config.pbtxt and REPOSITORY/NAME/VERSION/ "
                            "with what Triton loads: full-TensorRT plans under its TensorRT backend (platform "
                            "tensorrt_plan, one plan per compute capability in cc_model_filenames, no default, so a GPU "
                            "without a plan of its own refuses the model); TensorRT-RTX plans, which that backend cannot "
                            "load, as a Python-backend model (model.py) running them with the TensorRT-RTX runtime, the "
                            "plan chosen per GPU. Uses what is built, never builds: a target not built fails (exit 1). "
                            "An unchanged model folder is left alone.")
    triton.add_argument("recipes", nargs="+", metavar="RECIPE_OR_DIR",
                        help="recipe files, or directories of *.yaml / *.yml recipes")
    triton.add_argument("--repository", type=Path, required=True, metavar="DIR", help="the model repository folder")
    triton.add_argument("--version", type=positive, default=1, metavar="N", help="the model version folder (default 1)")
    triton.add_argument("--backend", metavar="NAME",
                        help="the plans of this backend only, e.g. tensorrt-rtx (a Triton model serves one backend's "
                        "plans)")
    triton.add_argument("--target", action="append", type=target_spec, metavar="SPEC",
                        help="the plans of these targets instead of the recipes' (repeatable), as built with "
                        "`trtbuild --target`")
    triton.set_defaults(func=_triton)
    return parser


def _triton(args) -> int:
    from trtbuild.commands.triton import cmd_triton

    return cmd_triton(args)


def _dry_run(args) -> tuple[list, list, list[str]]:
    """What a build would do, step by step, without building: (results, state rows, recipe problems)."""
    from trtbuild.store.cache import Cache
    from trtbuild.execution.progress import Progress
    from trtbuild.execution.runner import Runner
    from trtbuild.commands.status import step_states

    from trtbuild.store.remote import open_remote

    cache = Cache(args.cache_dir)
    warn = lambda text: print(f"trtbuild: warning: {text}", file=sys.stderr)  # noqa: E731
    executor = executor_for(args, cache, warn)  # with ray: targets as the cluster resolves them; nothing runs
    try:
        steps, problems = compile_recipes(args, cache, executor and executor.machine)
        with open(os.devnull, "w") as devnull:
            progress = Progress(stream=devnull, quiet=True)
            remote = open_remote(args.remote, warn, args.remote_timeout)
            results = Runner(cache, progress, dry_run=True, remote=remote).run(steps) if steps else []
    finally:
        if executor:
            executor.close()
    return results, step_states(results, cache), problems


def cmd_dag(args) -> int:
    from trtbuild.commands.dag import dot, mermaid

    results, rows, problems = _dry_run(args)
    for problem in problems:
        print(problem, file=sys.stderr)
    states = [(row["state"], row["reason"]) for row in rows]
    print((dot if args.dot else mermaid)(results, states), end="")
    return EXIT_USAGE if problems else EXIT_OK


def cmd_status(args) -> int:
    from trtbuild.commands.status import matrix, render_matrix

    results, rows, problems = _dry_run(args)
    cells = matrix(rows)
    if args.json:
        print(json.dumps({"recipe_errors": problems, "matrix": cells, "steps": rows}, indent=2))
    else:
        for problem in problems:
            print(problem, file=sys.stderr)
        if args.steps:
            for row in rows:
                target = f" [{row['target']}]" if row["target"] else ""
                print(f"{row['state']:<8} {row['recipe']}/{row['step']}{target}  {row['reason']}".rstrip())
        else:
            print(render_matrix(cells, {row["target"]: row["target_title"] for row in rows if row["target"]}))
    if problems:
        return EXIT_USAGE
    # 0: a build would compile nothing (a step on the remote is pulled, not built).
    return EXIT_OK if all(row["state"] in ("fresh", "remote", "skipped") for row in rows) else EXIT_BUILD_FAILED


def cmd_repro(args) -> int:
    import shutil

    from trtbuild.store.cache import Cache
    from trtbuild.planning.graph import Pick, Step, producer
    from trtbuild.planning.keys import key_components
    from trtbuild.execution.progress import Progress
    from trtbuild.execution.jobs import make_job
    from trtbuild.execution.repro import write_repro
    from trtbuild.execution.runner import Runner

    cache = Cache(args.cache_dir)
    args.recipes, args.backend, args.target = [args.recipe], None, [args.target] if args.target else None
    steps, problems = compile_recipes(args, cache)
    if problems:
        raise UsageError("\n".join(problems))
    step = next((s for s in steps if s.name == args.step), None)
    if step is None:
        raise UsageError(f"{args.recipe} has no {args.step} step; its steps: {', '.join(dict.fromkeys(s.name for s in steps))}")
    with open(os.devnull, "w") as devnull:
        runner = Runner(cache, Progress(stream=devnull, quiet=True), dry_run=True)
        results = {r.step: r for r in runner.run(steps)}
    unbuilt = [d.name for d in {producer(i) for i in step.inputs.values() if isinstance(i, (Step, Pick))}
               if results[d].record is None]
    if unbuilt:
        raise UsageError(f"{step.label} reads what {', '.join(unbuilt)} makes, which is not built: run trtbuild "
                         f"{args.recipe} first")
    workdir = cache.workdir("repro")
    try:
        deps = {d: results[d] for d in step.deps}
        components = key_components(step, cache, {d: r.record for d, r in deps.items()})
        job = make_job(step, {d: r.record for d, r in deps.items()}, workdir, components, cache)
        script = write_repro(job, cache.root / "repro" / step.recipe.recipe.name / step.id.replace("@", "-"),
                             step.label, scratch=workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(script)
    return EXIT_OK


def cmd_schema(args) -> int:
    from trtbuild.recipes.loader import json_schema

    try:
        print(json.dumps(json_schema(), indent=2))
        sys.stdout.flush()
    except BrokenPipeError:  # `trtbuild schema | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return EXIT_OK
