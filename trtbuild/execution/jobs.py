"""What a worker gets for a step (its job), and the check, once it ran, that the user's files did not move."""

from __future__ import annotations

from pathlib import Path

from trtbuild.planning.graph import Pick, SourceFiles, Step, producer, upstream_outputs
from trtbuild.execution.registered import registered
from trtbuild.planning.keys import source_digests, source_labels
from trtbuild.steps.action import expectations
from trtbuild.store.cache import Cache


def make_job(step: Step, records: dict[Step, dict], workdir: Path, components: dict, cache: Cache,
             checks_sources: bool = False) -> dict:
    """What a worker gets for `step`: upstream outputs (from their action `records`) linked into `workdir`,
    the user's files in place, the environment variables in its key, and what the worker checks before it
    runs (steps.action). `checks_sources`: the executor's workers digest the user's files they see (a farm)."""
    job = {
        "kind": step.kind.NAME,
        "params": step.params,
        "inputs": {name: str(_materialize(cache, src, workdir / f"in-{name}", records, step.kind))
                   for name, src in step.inputs.items()},
        "outdir": str(workdir / "out"),
        "context": step.context,
        "env": components["env"],
        "expect": expectations(step.kind.NAME, components),
    }
    found = registered()  # what register() calls named, which a worker's fresh process has not seen
    if found:
        job["registered"] = found
    if checks_sources:
        sources = {name: {label: str(path) for label, path in source_labels(step, source).items()}
                   for name, source in step.inputs.items() if isinstance(source, SourceFiles)}
        job["sources"] = sources
        job["expect"]["inputs"] = {name: components["inputs"][name] for name in sources}
    return job


def needs_own_process(step: Step) -> bool:
    """A worker of its own, which exits after the step: for kinds that ask for one, steps running the
    user's code (their system calls are watched: trtbuild.store.syscall_filter), and steps pinned to a GPU
    (CUDA reads CUDA_VISIBLE_DEVICES once per process)."""
    return (getattr(step.kind, "FRESH_PROCESS", False) or "python_path" in step.context
            or "cuda_device" in step.context)


def upstream_objects(step: Step, components: dict) -> dict[str, dict[str, str]]:
    """The step's upstream inputs by content, {input name: {file name: digest}}: its key has them."""
    return {name: components["inputs"][name] for name, source in step.inputs.items()
            if isinstance(source, (Step, Pick))}


def sources_moved(step: Step, components: dict, cache: Cache) -> str | None:
    """The worker read the user's files after the key was taken: if one changed meanwhile (a git pull
    during a nightly build), what it made belongs to neither version. The error saying so, or None."""
    try:
        moved = [str(step.inputs[name].main) if label == "(main)" else label
                 for name, files in source_digests(step, cache).items()
                 for label, digest in files.items() if components["inputs"][name].get(label) != digest]
    except OSError as exc:  # deleted meanwhile
        moved = [f"{exc.filename} ({exc.strerror})"]
    if not moved:
        return None
    return f"source changed during the build: {', '.join(moved)}; nothing was cached, run again"


def _materialize(cache: Cache, source, where: Path, records: dict[Step, dict], reader=None) -> Path:
    """The path a worker opens for an input: the user's file, or upstream outputs linked under their names.
    `reader`: the step kind that opens it; one with LINKED_DATA takes ONNX external data hard-linked."""
    if not isinstance(source, (Step, Pick)):
        return source.main
    step = producer(source)
    cache.link_into(where, upstream_outputs(source, records[step]), copy_data=not getattr(reader, "LINKED_DATA", False))
    return where / step.kind.MAIN_OUTPUT
