"""`trtbuild triton`: a Triton Inference Server model repository from what is built (never builds).

For each recipe, REPOSITORY/<name>/config.pbtxt and REPOSITORY/<name>/<version>/ with what Triton can
load (trtbuild.commands.triton_config: full-TensorRT plans under Triton's TensorRT backend, chosen per
compute capability; TensorRT-RTX plans in a Python-backend model that runs them with the TensorRT-RTX
runtime). The targets are the recipes', or those of --target, as in `trtbuild build` and `path`. A
folder whose files are already those is left alone, so a server polling the repository reloads
nothing; otherwise the version folder is written beside it and renamed into place, and config.pbtxt
replaced atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from trtbuild.commands.triton_config import model_files
from trtbuild.errors import EXIT_OK, StepError, UsageError
from trtbuild.store.hashing import digest_file


def cmd_triton(args) -> int:
    from trtbuild.commands.build import compile_recipes
    from trtbuild.execution.progress import Progress
    from trtbuild.execution.runner import Runner
    from trtbuild.store.cache import Cache

    cache = Cache(args.cache_dir)
    backend, args.backend = args.backend, None  # --backend picks plans, not targets
    steps, problems = compile_recipes(args, cache)
    if problems:
        raise UsageError("\n".join(problems))
    with open(os.devnull, "w") as devnull:
        results = Runner(cache, Progress(stream=devnull, quiet=True), dry_run=True).run(steps)
    models: dict[str, list[tuple[dict, Path]]] = {}
    missing = []
    for result in results:
        step = result.step
        if step.name != "engine" or backend not in (None, step.target.backend):
            continue
        recipe = step.recipe.recipe.name
        plan = result.record and result.record["outputs"].get("model.plan")
        if plan is None or not cache.verified(plan["digest"]):
            why = (f"cannot be built here: {step.skip_reason}" if step.skip_reason else result.reason
                   if result.status != "cached" else "its plan is missing from the cache")
            missing.append(f"{recipe} [{step.target.id}]: not built ({why})")
            continue
        models.setdefault(recipe, []).append((result.record["meta"], cache.object_path(plan["digest"])))
    if missing:
        raise StepError("the repository needs every target's plan; build them first (`trtbuild "
                        f"{' '.join(args.recipes)}`):\n  " + "\n  ".join(missing))
    for name, plans in models.items():
        folder = args.repository / name
        changed = write_model(folder, name, plans, args.version, backend)
        print(f"{'wrote' if changed else 'unchanged'}  {folder}")
    return EXIT_OK


def write_model(folder: Path, name: str, plans: list[tuple[dict, Path]], version: int, backend: str | None) -> bool:
    """Make `folder` hold config.pbtxt and <version>/ with its files; False when it already did."""
    from trtbuild.store.fsutil import atomic_write

    config, files = model_files(name, plans, backend)
    target = folder / str(version)
    if _holds(folder, config, target, files):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{version}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        staging.mkdir()
        for file, content in files.items():
            if isinstance(content, bytes):
                (staging / file).write_bytes(content)
            else:
                shutil.copyfile(content, staging / file)
        if target.exists():  # the old version folder leaves in one rename, the new one arrives in another
            retired = folder / f".{version}.{uuid.uuid4().hex[:12]}.old"
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write(folder / "config.pbtxt", config.encode())
    return True


def _holds(folder: Path, config: str, target: Path, files: dict) -> bool:
    try:
        if (folder / "config.pbtxt").read_text() != config:
            return False
        present = {p.name for p in target.iterdir()}
    except OSError:
        return False
    return present == set(files) and all(digest_file(target / f) == _digest(content) for f, content in files.items())


def _digest(content: bytes | Path) -> str:
    return hashlib.sha256(content).hexdigest() if isinstance(content, bytes) else digest_file(content)
