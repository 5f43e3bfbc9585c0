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
    return _labels(project_root(step.recipe), source)


@functools.lru_cache(maxsize=4096)
def _labels(root: Path, source: SourceFiles) -> dict[str, Path]:
    """Names made from paths alone, one per file: those beside the main file under "(main)/", the
    others relative to the project (absolute outside it), so no two files share a name."""
    labels = {}
    for file in source.files:
        if source.beside_main and file == source.main:
            labels["(main)"] = file
        elif source.beside_main and file.is_relative_to(source.main.parent):
            labels[f"(main)/{file.relative_to(source.main.parent)}"] = file
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
    """"inputs.code.(main) changed (a -> b)" -> "inputs.code.(main) changed (net.py: a -> b)"; a file
    beside the main one is shown from the recipe's folder: "inputs.code.(main)/x.py" -> "inputs.code.models/x.py"."""
    for name, source in step.inputs.items():
        prefix = f"inputs.{name}.(main) changed ("
        if isinstance(source, SourceFiles) and change.startswith(prefix):
            return f"{prefix}{_shown(source.main, step)}: {change[len(prefix):]}"
        beside = f"inputs.{name}.(main)/"
        if isinstance(source, SourceFiles) and change.startswith(beside):
            folder = _shown(source.main.parent, step)
            return f"inputs.{name}.{'' if str(folder) == '.' else f'{folder}/'}{change[len(beside):]}"
    return change


def _shown(path: Path, step: Step) -> Path:
    try:
        return path.resolve().relative_to(step.recipe.file.resolve().parent)
    except ValueError:
        return path


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def project_root(loaded) -> Path:
    """The folder a recipe's files are named relative to in keys and records: the git repository holding
    the recipe; outside one, the recipe's folder widened to every folder its relative paths reach
    (python_path: ../models). The same in every checkout, at any depth."""
    recipe = loaded.recipe
    source, calibration = recipe.source, recipe.precision.calibration
    named = [source.path, source.checkpoint, recipe.parity.data, *source.python_path, *source.deps,
             calibration.data if calibration else None]
    return _project_root(stable_root(loaded.file), tuple(p for p in named if p and not os.path.isabs(p)))


@functools.lru_cache(maxsize=4096)
def _project_root(root: Path, relative: tuple[str, ...]) -> Path:
    """Per stable root and relative paths, not per recipe: a folder of recipes naming the same files
    (../models/x.onnx) is looked up once. Outside a repository the root is the recipe's own folder,
    which the relative paths start from."""
    if not relative or _has_git(root):
        return root
    reached = [os.path.normpath(root / _fixed_part(p)) for p in relative]
    return Path(os.path.commonpath([str(root), *reached]))


@functools.cache
def _has_git(folder: Path) -> bool:
    return (folder / ".git").exists()


def _fixed_part(pattern: str) -> str:
    """A glob's folders before its first wildcard ("../data/*/x.npy" -> "../data")."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    return os.path.join(*parts[:fixed]) if fixed else "."


def stable_root(recipe_file: Path) -> Path:
    """What paths of a recipe's files are recorded relative to: the git repository holding the recipe,
    else the recipe's folder (the same in every checkout, wherever it lies). A relative name is taken
    from the working directory of the moment; each folder is resolved and searched once."""
    return _stable_root(os.getcwd(), str(recipe_file))


@functools.cache
def _stable_root(cwd: str, recipe_file: str) -> Path:
    file = os.path.join(cwd, recipe_file)
    if os.path.islink(file):
        return _root_of(Path(file).resolve().parent)
    return _root_of(_real_folder(os.path.dirname(file)))


@functools.cache
def _real_folder(folder: str) -> Path:
    return Path(folder).resolve()


@functools.cache
def _root_of(folder: Path) -> Path:
    for candidate in (folder, *folder.parents):
        if _has_git(candidate):
            return candidate
    return folder


def portable(file: Path | str, root: Path) -> str:
    """A file's name in keys and records: relative to the project `root` when inside it, absolute outside
    it (a dataset on another volume is the same file from a checkout at any depth)."""
    file = Path(file)
    if file.is_relative_to(root):
        return str(file.relative_to(root))
    return str(file)
