"""Recipe -> DAG of steps; step keys; why a step must run.

A step's key hashes its kind and implementation version, canonical parameters, the digests of
its input files, the versions of the tools it calls and, for an engine, its target. Inputs
produced by another step are identified by that step's output digests, so a step whose upstream
reran but produced identical bytes stays cached (early cutoff).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from trtbuild.cache import Cache
from trtbuild.hashing import digest_json
from trtbuild.recipe import LoadedRecipe
from trtbuild.sources import onnx_files
from trtbuild.steps import load_kind, tool_version
from trtbuild.target import Target, resolve_target


@dataclass(frozen=True)
class SourceFiles:
    """Files from the user's tree; `main` is what the step opens (the others sit beside it)."""

    main: Path
    files: tuple[Path, ...]


@dataclass(eq=False)
class Step:
    recipe: LoadedRecipe
    name: str
    kind: ModuleType
    params: dict
    inputs: dict[str, SourceFiles | Step]
    publish_dir: Path  # relative to the cache's out/ directory
    target: Target | None = None
    context: dict = field(default_factory=dict)  # handed to the worker, not part of the key

    @property
    def id(self) -> str:
        return self.name if self.target is None else f"{self.name}@{self.target.id}"

    @property
    def label(self) -> str:
        return f"{self.recipe.recipe.name}/{self.name}"

    @property
    def deps(self) -> list[Step]:
        return [i for i in self.inputs.values() if isinstance(i, Step)]


def compile_recipe(loaded: LoadedRecipe, cache: Cache, backend: str | None = None) -> list[Step]:
    """The steps of one recipe in dependency order."""
    recipe = loaded.recipe
    model = loaded.source_path()
    source = SourceFiles(model, tuple(onnx_files(model, cache.stat_cache)))
    inputs = {name: _input_params(spec) for name, spec in recipe.inputs.items()}
    out = Path(recipe.name)

    check = Step(
        loaded, "check", load_kind("check"), {"inputs": inputs}, {"model": source}, out,
        context={"where": {name: loaded.where("inputs", name) for name in inputs}, "recipe": str(loaded.file)},
    )
    steps = [check]
    model_input: SourceFiles | Step = source
    if recipe.onnx.simplify:
        # Depends on check so an invalid model fails there, with the clearer message.
        simplify = Step(loaded, "simplify", load_kind("simplify"), {"inputs": inputs}, {"model": source, "checked": check}, out)
        steps.append(simplify)
        model_input = simplify
    target = resolve_target(backend or recipe.engine.backend, recipe.engine.compute_capabilities)
    engine_params = {
        "inputs": inputs,
        "precision": recipe.engine.precision,
        "workspace": int(recipe.engine.workspace),
        "optimization_level": recipe.engine.optimization_level,
        "target": target.to_dict(),
    }
    engine_inputs = {"model": model_input} if model_input is not source else {"model": source, "checked": check}
    timing_cache = cache.timing / f"{target.id}.cache"
    steps.append(
        Step(loaded, "engine", load_kind("engine"), engine_params, engine_inputs, out / target.id, target,
             context={"timing_cache": str(timing_cache)})
    )
    return steps


def _input_params(spec) -> dict:
    lo, mid, hi = spec.profile()
    return {"dtype": spec.dtype, "shape": list(spec.shape), "min": lo, "opt": mid, "max": hi}


def key_components(step: Step, cache: Cache, upstream: dict[Step, dict]) -> dict:
    """Everything the step's output depends on. `upstream` maps each dependency to its action record."""
    inputs = {}
    for name, source in step.inputs.items():
        if isinstance(source, Step):
            inputs[name] = {out: o["digest"] for out, o in sorted(upstream[source]["outputs"].items())}
        else:
            base = source.main.parent
            inputs[name] = {str(f.relative_to(base)) if f != source.main else "(model)": cache.stat_cache.digest(f)
                            for f in source.files}
    return {
        "kind": step.kind.NAME,
        "version": step.kind.VERSION,
        "params": step.params,
        "inputs": inputs,
        "tools": {dist: tool_version(dist) for dist in step.kind.TOOLS},
    }


def step_key(components: dict) -> str:
    return digest_json(components)


def explain(previous: dict | None, current: dict) -> str:
    """Why a step with no cached result must run, from the components of its last build."""
    if not previous:
        return "never built"
    changes = _diff(previous.get("components", {}), current)
    if not changes:
        if previous.get("status") == "failed":
            return "last attempt failed"
        return "cached result missing (cache cleaned?)"
    return "; ".join(changes[:4]) + (f" (+{len(changes) - 4} more)" if len(changes) > 4 else "")


def _diff(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                changes.append(f"{sub} added")
            elif key not in new:
                changes.append(f"{sub} removed")
            else:
                changes += _diff(old[key], new[key], sub)
        return changes
    if old == new:
        return []
    if path.startswith("inputs."):
        return [f"{path} changed ({str(old)[:8]} -> {str(new)[:8]})"]
    return [f"{path}: {_short(old)} -> {_short(new)}"]


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."
