"""Recipe -> DAG of steps. Each step kind plans itself (its module's plan(), given a
trtbuild.planning.context.Planning); this module only orders the kinds by what each declares it
follows (AFTER, optionally BEFORE) and collects their steps. Keys: planning.keys."""

from __future__ import annotations

import contextlib
import functools
import gc
from types import ModuleType

from trtbuild.store.cache import Cache
from trtbuild.errors import UsageError
from trtbuild.recipes.loader import LoadedRecipe
from trtbuild.backends import backend as backend_module
from trtbuild.backends.gpu import remember_in
from trtbuild.planning.context import Planning
from trtbuild.planning.nodes import Pick, SourceFiles, Step, producer, upstream_outputs  # noqa: F401 (the graph's nodes)
from trtbuild.steps import KINDS, load_kind
from trtbuild.steps.precision import fp16_converter  # noqa: F401 (asked by `trtbuild env`)
from trtbuild.backends.target import Target, cannot_run_here, cuda_device, resolve_target


class ThisMachine:
    """Which targets this machine builds and runs, and on which GPU: what a step's context and skip
    reason say. A cluster executor answers the same questions for its nodes (trtbuild.execution.farm)."""

    resolve = staticmethod(resolve_target)

    @staticmethod
    def builder(target: Target) -> dict:
        return cuda_device(target) if backend_module(target.backend).BUILDS_ON_GPU else {}  # TensorRT-RTX builds without one

    @staticmethod
    def runner(target: Target, precision: str) -> tuple[dict, str | None]:
        return cuda_device(target, precision), cannot_run_here(target, precision)


class Remembered:
    """A machine's answers (ThisMachine's, a cluster's) asked once per target, not once per recipe, while
    recipes compile: they depend on the target alone (GPUs and backends are found once per process)."""

    def __init__(self, machine):
        self.machine = machine
        self._answers: dict[tuple, object] = {}

    def _ask(self, question: str, *args):
        found = self._answers.get((question, *args))
        if found is None:
            found = self._answers[(question, *args)] = getattr(self.machine, question)(*args)
        return found

    def resolve(self, spec: str):
        return self._ask("resolve", spec)

    def builder(self, target: Target) -> dict:
        return dict(self._ask("builder", target))  # a step's own context

    def runner(self, target: Target, precision: str) -> tuple[dict, str | None]:
        context, why = self._ask("runner", target, precision)
        return dict(context), why

    def __getattr__(self, name: str):
        return getattr(self.machine, name)


@contextlib.contextmanager
def no_collection():
    """While recipes compile: the plan is many small objects that all live on, which the cyclic
    collector would scan again and again and never free (a tenth of a no-op build of 1000 recipes).
    Once compiled they are frozen (gc.freeze: left out of later collections while the run goes on);
    the command line unfreezes them when the command ends (trtbuild.commands.cli)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.freeze()
            gc.enable()


def compile_recipe(loaded: LoadedRecipe, cache: Cache, backend: str | None = None,
                   targets: list[str] | None = None, machine=ThisMachine) -> list[Step]:
    """The steps of one recipe in dependency order: every kind (the built-in ones and those the recipe's
    `steps` names), in the order their declarations give, plans its own steps or none. Built in:
    [export -> check -> parity ->] simplify -> [precision -> accuracy ->] engine -> verify."""
    remember_in(cache.mine and cache.mine / "gpus.json")  # NVML once per GPU set, not once per run
    plugins = getattr(loaded.recipe, "steps", None) or {}
    if plugins:
        from trtbuild.planning.plugin_params import check_names

        check_names(loaded)
    p = Planning(loaded, cache, backend, targets, machine)
    for kind in kind_order(tuple(plugins)):
        made = kind.plan(p, _plugin_params(loaded, kind, plugins[kind.NAME])) if kind.NAME in plugins else kind.plan(p)
        p.record(kind.NAME, made)
    steps = [s for made in p.planned.values() for s in made]
    if len(p.targets) < 2:
        return steps
    # Untargeted steps first, then each target's steps together, in the order the targets were given.
    order = {t.id: i for i, (_, t, _) in enumerate(p.targets)}
    return sorted(steps, key=lambda s: -1 if s.target is None else order.get(s.target.id, len(order)))


@functools.cache
def kind_order(plugins: tuple[str, ...]) -> tuple[ModuleType, ...]:
    """The built-in kinds and the `plugins`, each after the kinds it names in AFTER (and before those in
    its BEFORE); among kinds free to go, the one registered first (built-in order, then the recipe's)."""
    names = list(dict.fromkeys([*KINDS, *plugins]))
    kinds = {}
    for name in names:
        try:
            kinds[name] = load_kind(name)
        except Exception as exc:  # a plug-in module that does not import: say which, without a traceback
            raise UsageError(f"step kind {name}: cannot import its module: {type(exc).__name__}: {exc}") from None
        if kinds[name].NAME != name:
            raise UsageError(f"step kind {name}: its module {kinds[name].__name__} says NAME = {kinds[name].NAME!r}; "
                             f"a kind's NAME is the name it is found by")
    waits = {name: {a for a in getattr(kind, "AFTER", ()) if a in kinds} for name, kind in kinds.items()}
    for name, kind in kinds.items():
        for later in getattr(kind, "BEFORE", ()):
            if later in waits:
                waits[later].add(name)
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and waits[n] <= set(ordered)]
        if not ready:
            stuck = sorted(set(names) - set(ordered))
            raise UsageError(f"step kinds {', '.join(stuck)}: their AFTER / BEFORE declarations make a cycle")
        ordered.append(ready[0])
    return tuple(kinds[n] for n in ordered)


def _plugin_params(loaded: LoadedRecipe, kind: ModuleType, values) -> object:
    """A plug-in kind's entry under the recipe's `steps`, validated by the kind's own pydantic model
    (PARAMS); an error names the line of the value."""
    from trtbuild.planning.plugin_params import validated

    return validated(loaded, kind, values)
