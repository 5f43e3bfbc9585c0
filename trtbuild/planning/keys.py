"""Step keys: what a step's output depends on, how its user files are named, and why a step must run.

A step's key hashes its kind and code version, canonical parameters, the digests of its input files,
the versions of the tools it calls, the environment variables its kind reads and, for an engine,
its target. Inputs produced by another step are identified by that step's output digests, so a step
whose upstream reran but produced identical bytes stays cached (early cutoff).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from trtbuild.planning.graph import Pick, SourceFiles, Step, producer, upstream_outputs
from trtbuild.steps import env_read
from trtbuild.steps.action import code_version, keyed_env, tool_version
from trtbuild.store.buildlog import BuildLog, components_digest
from trtbuild.store.cache import Cache
from trtbuild.store.hashing import digest_json


def key_components(step: Step, cache: Cache, upstream: dict[Step, dict], environment: dict | None = None) -> dict:
    """Everything the step's output depends on. `upstream` maps each dependency to its action record.
    `environment`: a run's memo of what each kind reads of the environment (taken once per run: the
    values its steps get are the ones in their keys)."""
    declared = env_read(step.kind, step.params)
    if environment is None:
        env = keyed_env(declared)
    elif declared in environment:
        env = environment[declared]
    else:
        env = environment[declared] = keyed_env(declared)
    inputs = source_digests(step, cache)
    for name, source in step.inputs.items():
        if isinstance(source, (Step, Pick)):
            outputs = upstream_outputs(source, upstream[producer(source)])
            inputs[name] = {out: o["digest"] for out, o in sorted(outputs.items())}
    return {
        "kind": step.kind.NAME,
        "version": code_version(step.kind.NAME),
        "params": step.params,
        "inputs": inputs,
        "tools": {dist: tool_version(dist) for dist in step.kind.tools(step.params)},
        "env": env,
    }


def source_digests(step: Step, cache: Cache) -> dict[str, dict[str, str]]:
    """The digests of the step's files from the user's tree, by input name and label. Taken for the key
    and again after the step ran: a file that moved in between fails the step, not the cache."""
    return {name: {label: cache.stat_cache.digest(f) for label, f in source_labels(step, source).items()}
            for name, source in step.inputs.items() if isinstance(source, SourceFiles)}


def source_labels(step: Step, source: SourceFiles) -> dict[str, Path]:
    """{label: file}: how each file is named in a key. Relative names (to the main file's folder, else
    to the recipe's project) let two checkouts of one repository share every key. Not to be modified:
    the steps of a recipe that read one model share the answer."""
    return _labels(step.recipe.file, source)


@functools.lru_cache(maxsize=4096)
def _labels(recipe_file: Path, source: SourceFiles) -> dict[str, Path]:
    """As stable_root, remembered per recipe file: names made from paths alone."""
    root = stable_root(recipe_file)
    labels = {}
    for file in source.files:
        if source.beside_main and file == source.main:
            labels["(main)"] = file
        elif source.beside_main and file.is_relative_to(source.main.parent):
            labels[str(file.relative_to(source.main.parent))] = file
        else:
            labels[portable(file, root)] = file
    return labels


def step_key(components: dict, log: BuildLog | None = None) -> str:
    """The digest of the canonical JSON of `components`; with a build log, looked up there by a cheaper
    digest of the same values when an earlier run computed it."""
    digest = components_digest(components) if log is not None else None
    key = log.key(digest) if digest else None
    if key is None:
        key = digest_json(components)
        if digest:
            log.learn_key(digest, key)
    return key


def explain(previous: dict | None, current: dict, step: Step | None = None) -> str:
    """Why a step with no cached result must run, from the components of its last build. With `step`,
    a changed main file is named too: "(main)" is its label in the key, whatever the file is called."""
    if not previous:
        return "never built"
    changes = _diff(previous.get("components", {}), current)
    if step is not None:
        changes = [_main_named(change, step) for change in changes]
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
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and any(
            isinstance(item, (dict, list)) for item in old):  # profiles: name the one that changed
        return [change for i, (a, b) in enumerate(zip(old, new)) for change in _diff(a, b, f"{path}[{i}]")]
    if old == new:
        return []
    if path.startswith("inputs."):
        return [f"{path} changed ({str(old)[:8]} -> {str(new)[:8]})"]
    return [f"{path}: {_short(old)} -> {_short(new)}"]


def _main_named(change: str, step: Step) -> str:
    """"inputs.code.(main) changed (a -> b)" -> "inputs.code.(main) changed (net.py: a -> b)"."""
    for name, source in step.inputs.items():
        prefix = f"inputs.{name}.(main) changed ("
        if isinstance(source, SourceFiles) and change.startswith(prefix):
            try:
                shown = source.main.resolve().relative_to(step.recipe.file.resolve().parent)
            except ValueError:
                shown = source.main
            return f"{prefix}{shown}: {change[len(prefix):]}"
    return change


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@functools.cache
def stable_root(recipe_file: Path) -> Path:
    """What paths of a recipe's files are recorded relative to: the git repository holding the recipe,
    else the recipe's folder (the same in every checkout, wherever it lies)."""
    if os.path.islink(recipe_file):
        return _root_of(recipe_file.resolve().parent)
    folder = recipe_file.parent
    return _root_of(_real_folder(folder) if folder.is_absolute() else folder.resolve())  # shared: resolved once


@functools.cache
def _real_folder(folder: Path) -> Path:
    return folder.resolve()


@functools.cache
def _root_of(folder: Path) -> Path:
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def portable(file: Path | str, root: Path) -> str:
    """A file's name in keys and records: relative to `root` when inside it; outside, absolute when
    `root` is a repository (a dataset on another volume), else relative too (a project copied whole)."""
    file = Path(file)
    if file.is_relative_to(root):
        return str(file.relative_to(root))
    return str(file) if (root / ".git").exists() else os.path.relpath(file, root)
