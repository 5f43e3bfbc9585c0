"""Commands that work on the cache or this machine, not on recipes: gc, env, path, ray-node."""

from __future__ import annotations

import json
import sys
import time

from trtbuild.commands.arguments import byte_size
from trtbuild.errors import EXIT_OK, TrtbuildError, UsageError, first_line


def cmd_ray_node(args) -> int:
    from trtbuild.execution.farm import ray_start_options, this_node

    offers = this_node()
    where = f"--address={args.address}" if args.address else "--head"
    print(f"ray start {where} {ray_start_options(offers)}")
    if not offers:
        print("trtbuild: this machine offers CPU steps only (no TensorRT backend or GPU found)", file=sys.stderr)
    return EXIT_OK


def cmd_gc(args) -> int:
    from trtbuild.store import collect
    from trtbuild.store.cache import Cache
    from trtbuild.store.remote import open_remote
    from trtbuild.store.retention import Policy, parse_age

    try:
        policy = Policy(keep_last=args.keep_last,
                        older_than=parse_age(args.older_than) if args.older_than else None,
                        max_size=byte_size(args.max_size) if args.max_size else None)
        grace = parse_age(args.grace)
    except ValueError as exc:
        raise UsageError(f"gc: {first_line(exc)}") from None
    warn = lambda text: print(f"trtbuild: warning: {text}", file=sys.stderr)  # noqa: E731
    cache = Cache(args.cache_dir, warn)
    live = _live(args, cache)  # gc DIR...: what the recipes there make now
    keep = {} if live is None else {"live": live[0], "live_recipes": live[1], "pinned": live[2]}
    where = {"local cache": lambda: collect.collect(cache, policy, dry_run=args.dry_run, **keep)}
    if args.remote:  # the same policy there; this machine's last builds are kept on it too
        remote = open_remote(args.remote, warn, getattr(args, "remote_timeout", None))
        protected = collect.current_keys(cache) if live is None else live[0]
        where[f"remote {args.remote}"] = lambda: remote.gc(policy, protected, args.dry_run, time.time(), grace)
    verb = "would remove" if args.dry_run else "removed"
    for name, run in where.items():
        try:
            stats = run()
        except Exception as exc:  # OSError, a remote's own errors, a stall past its deadline
            raise TrtbuildError(f"gc on the {name}: {type(exc).__name__}: {first_line(exc)}") from None
        print(f"{name}: {verb} {stats['retired_actions']} results and {stats['removed_objects']} objects "
              f"({stats['freed_bytes'] / 2**20:.1f} MiB); kept {stats['kept_objects']} objects")
        if stats.get("malformed_records"):
            print(f"{name}: {verb} {stats['malformed_records']} malformed records")
        if stats.get("removed_out"):
            print(f"{name}: {verb} out/ of {', '.join(stats['removed_out'])} (no recipe makes them now)")
        if stats.get("marked_objects") and args.dry_run:
            print(f"{name}: would mark {stats['marked_objects']} unreferenced objects (-n marks nothing); a gc at "
                  f"least {args.grace} after a gc that marks them deletes those still unreferenced")
        elif stats.get("marked_objects"):
            print(f"{name}: {stats['marked_objects']} unreferenced objects marked; a gc at least {args.grace} "
                  "later deletes those still unreferenced")
        if stats.get("short_bytes"):
            print(f"trtbuild: warning: {name}: could not meet --max-size {args.max_size}: "
                  f"{stats['kept_bytes'] / 2**20:.1f} MiB remain, held by the current builds and what out/ shows "
                  f"({stats['short_bytes'] / 2**20:.1f} MiB over)", file=sys.stderr)
    return EXIT_OK


def _live(args, cache):
    """(keys, recipe names, pinned steps) the recipes under args.recipes make now; None without DIR."""
    if not args.recipes:
        return None
    from trtbuild.commands.build import compile_recipes
    from trtbuild.planning.live import live_steps

    args.backend, args.target = None, None
    steps, problems = compile_recipes(args, cache)
    if problems:  # a recipe that does not load: its results cannot be told from dead ones
        raise UsageError("gc: the recipes must load to tell what they make; fix them first:\n  "
                         + "\n  ".join(problems))
    keys, pinned = live_steps(steps, cache)
    return keys, {s.recipe.recipe.name for s in steps}, pinned


def cmd_env(args) -> int:
    from trtbuild.commands.environment import describe, render

    info = describe()
    print(json.dumps(info, indent=2) if args.json else render(info))
    return EXIT_OK


def cmd_path(args) -> int:
    from trtbuild.commands.deploy import find_plan

    print(find_plan(args.name, args.cache_dir, args.gpu, args.target))
    return EXIT_OK
