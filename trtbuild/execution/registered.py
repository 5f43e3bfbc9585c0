"""What this process registered beyond the built-ins and the naming conventions (steps.register_kind,
backends.register, frontends.registry.register): it travels with each job, so the worker that runs a
step, a farm node or a repro script knows the names the planner knew."""

from __future__ import annotations

import dataclasses


def registered() -> dict:
    """{"kinds": {name: module}, "backends": {name: module}, "frameworks": [descriptor fields]}, each only
    where something was registered (most builds: {})."""
    from trtbuild import backends
    from trtbuild.frontends import registry
    from trtbuild.steps import PLUGINS

    found = {"kinds": dict(PLUGINS),
             "backends": {n: m for n, m in backends.REGISTRY.items() if n not in backends.BUILT_IN},
             "frameworks": [dataclasses.asdict(f) for n, f in registry.REGISTRY.items() if n not in registry.BUILT_IN]}
    return {what: names for what, names in found.items() if names}


def register_all(found: dict) -> None:
    """Register in this process what `registered()` listed in the planner's."""
    from trtbuild import backends
    from trtbuild.frontends import registry
    from trtbuild.steps import register_kind

    for name, module in found.get("kinds", {}).items():
        register_kind(name, module)
    for name, module in found.get("backends", {}).items():
        backends.register(name, module)
    for fields in found.get("frameworks", []):
        registry.register(registry.Framework(**{k: _tuples(v) for k, v in fields.items()}))


def _tuples(value):
    """JSON made the descriptor's tuples (and tuples of tuples) lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
