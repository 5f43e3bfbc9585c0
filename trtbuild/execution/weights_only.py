"""Weights-only rebuilds, the runner's side: when an export must run and, since its last build, only
weights moved (trtbuild.planning.weights), the export takes the last exported graph and puts the new
weights in it (trtbuild.steps.reweight) instead of exporting again. Engines are rebuilt from the new
model as for any new ONNX model.
"""

from __future__ import annotations

from pathlib import Path

from trtbuild.planning import weights
from trtbuild.planning.graph import Step
from trtbuild.planning.keys import project_root
from trtbuild.steps.action import tool_version
from trtbuild.steps.reweight import TEMPLATE, supported
from trtbuild.store import discovered
from trtbuild.store.cache import Cache


def plan(step: Step, components: dict, cache: Cache, state: dict) -> dict | None:
    """{"key", "record", "changed"} of the step's last build when it can lend its graph: a PyTorch export
    whose graph part of the key (trtbuild.planning.weights) is unchanged, whose files read while it ran
    are unchanged apart from weights, and whose weights did change; else None."""
    if step.kind.NAME != "export" or not supported(step.params.get("framework")):
        return None
    entry = state.get(step.id)
    if not isinstance(entry, dict) or entry.get("status") != "built":
        return None
    record = cache.get_action(entry["key"])
    if record is None or TEMPLATE not in record["outputs"] or record.get("meta", {}).get("exporter") != "dynamo":
        return None
    previous = record.get("components") or {}
    if "inputs" not in previous or weights.graph_part(previous) != weights.graph_part(components):
        return None
    found = record.get("discovered") or {}
    if found and not discovered.valid(found):
        return None
    root = project_root(step.recipe)
    moved_weights, rest = weights.split(found, root)
    if discovered.changed(rest, root, cache.stat_cache, tool_version):
        return None  # code, a config file or a folder moved too: a full export
    changed = [_declared(step, label) for name, files in weights.weights_part(components).items()
               for label, digest in files.items() if weights.weights_part(previous).get(name, {}).get(label) != digest]
    changed += [c.removesuffix(" changed") for c in discovered.changed(moved_weights, root, cache.stat_cache, tool_version)]
    if not changed:
        return None
    return {"key": entry["key"], "record": record, "changed": changed}


def _declared(step: Step, label: str) -> str:
    """source.checkpoint's file as the recipe names it ("(main)" is its label in the key)."""
    source = step.inputs.get("checkpoint")
    if label == "(main)" and source is not None:
        return f"{getattr(source, 'main', label).name} (source.checkpoint)"
    return label


def reason(planned: dict) -> str:
    shown = planned["changed"]
    return f"weights changed: {', '.join(shown[:3])}{' ...' if len(shown) > 3 else ''}"


def context(planned: dict, cache: Cache, workdir: Path) -> dict:
    """What the export's job gets: the last export's files, linked into the step's scratch folder."""
    folder = workdir / "last-export"
    folder.mkdir()
    record = planned["record"]
    cache.link_into(folder, record["outputs"])
    meta = {k: v for k, v in record.get("meta", {}).items() if k not in ("weights_only", "reads_observed")}
    return {"weights_only": {"from": str(folder), "key": planned["key"], "meta": meta}}


def outcome(why: str, meta: dict) -> str:
    """The step's reason once it ran: the graph reused, or why it was exported again."""
    done = meta.get("weights_only") or {}
    if "fallback" in done:
        return f"{why}; exported again: {done['fallback']}"
    if "from" in done:
        how = "copied in by name" if done.get("swap") == "direct" else "through the exporter's optimizer"
        return f"{why}; the last exported graph took the new weights ({done['weights']} replaced, {how}, no new export)"
    return why
