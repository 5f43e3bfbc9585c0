"""trtbuild from Python: what the command line does, as functions.

    from trtbuild import api

    recipe = api.load("recipes/resnet50.yaml")          # validated; RecipeError lists every problem
    steps = api.plan(["recipes/"], cache_dir="cache")   # the step graph, with nothing run
    outcome = api.build(["recipes/"], cache_dir="cache", jobs=2, targets=["tensorrt-rtx:sm86"])
    outcome.exit_code, outcome.failures                 # as the command's exit code and reports say
    stale = api.status(["recipes/"], cache_dir="cache") # a dry run: each step cached or would-run, and why
    plan_file = api.find_plan("resnet50", cache_dir="cache")

Each function takes the command line's options as keywords (build: jobs, targets, backend, force,
remote, report, junit, markdown, step_timeout, executor, quiet...), parsed by the same parser, so a value
the command line refuses is refused here (a UsageError). Nothing here imports a framework or TensorRT:
steps run in worker processes, as for the command.
"""

from __future__ import annotations

from pathlib import Path

from trtbuild.commands.deploy import find_plan
from trtbuild.errors import RecipeError, TrtbuildError, UsageError

__all__ = ["load", "plan", "build", "status", "find_plan", "RecipeError", "TrtbuildError", "UsageError"]


def load(recipe: str | Path):
    """The validated recipe (a LoadedRecipe: .recipe, the model; .file; .where(*key) for file:line)."""
    from trtbuild.recipes.loader import load_recipe

    return load_recipe(recipe)


def plan(recipes: list[str | Path], cache_dir: str | Path = "cache", **options) -> list:
    """The steps the recipes compile into (each with .kind, .params, .inputs, .target, .id), nothing run.
    Recipe problems raise RecipeError, all of them at once."""
    from trtbuild.commands.build import compile_recipes
    from trtbuild.store.cache import Cache

    args = _arguments(recipes, cache_dir, options)
    steps, problems = compile_recipes(args, Cache(args.cache_dir))
    if problems:
        raise RecipeError(problems)
    return steps


def build(recipes: list[str | Path], cache_dir: str | Path = "cache", **options):
    """Build the recipes (only what is stale): the run's Outcome, with .exit_code (0, 1 or 2), .ok,
    .results (one per step: .step, .status, .reason, .outputs) and .failures; reports are written as asked."""
    from trtbuild.commands.build import build_outcome

    return build_outcome(_arguments(recipes, cache_dir, options | {"quiet": options.get("quiet", True)}))


def status(recipes: list[str | Path], cache_dir: str | Path = "cache", **options):
    """What a build would do, without doing it: the Outcome of a dry run (each step cached, would-run or
    would-pull, with the reason)."""
    return build(recipes, cache_dir, **options, dry_run=True)


def _arguments(recipes, cache_dir, options: dict):
    """The build command's options, through its own parser: the same defaults and the same refusals."""
    from trtbuild.commands.cli import _parser

    argv = ["build", *map(str, recipes if isinstance(recipes, (list, tuple)) else [recipes]),
            "--cache-dir", str(cache_dir)]
    for name, value in options.items():
        flag = "--" + ("target" if name == "targets" else name).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value in (False, None):
            continue
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    try:
        return _parser(only="build").parse_args(argv)
    except SystemExit:  # argparse's way of refusing: its message went to stderr
        raise UsageError(f"options not accepted by `trtbuild build`: {argv[1:]}") from None
