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
    from trtbuild.store.cache import Cache
    from trtbuild.store.remote import open_remote
    from trtbuild.store.retention import Policy, parse_age

    try:
        policy = Policy(keep_last=args.keep_last,
                        older_than=parse_age(args.older_than) if args.older_than else None,
                        max_size=byte_size(args.max_size) if args.max_size else None)
    except ValueError as exc:
        raise UsageError(f"gc: {first_line(exc)}") from None
    cache = Cache(args.cache_dir)
    where = {"local cache": lambda: cache.gc(policy, dry_run=args.dry_run)}
    if args.remote:  # the same policy there; this machine's last builds are kept on it too
        remote = open_remote(args.remote, warn=lambda message: None)
        where[f"remote {args.remote}"] = lambda: remote.gc(policy, cache.current_keys(), args.dry_run, time.time())
    verb = "would remove" if args.dry_run else "removed"
    for name, collect in where.items():
        try:
            stats = collect()
        except OSError as exc:
            raise TrtbuildError(f"gc on the {name}: {type(exc).__name__}: {exc}") from None
        print(f"{name}: {verb} {stats['retired_actions']} results and {stats['removed_objects']} objects "
              f"({stats['freed_bytes'] / 2**20:.1f} MiB); kept {stats['kept_objects']} objects")
    return EXIT_OK


def cmd_env(args) -> int:
    from trtbuild.commands.environment import describe, render

    info = describe()
    print(json.dumps(info, indent=2) if args.json else render(info))
    return EXIT_OK


def cmd_path(args) -> int:
    from trtbuild.commands.deploy import find_plan

    print(find_plan(args.name, args.cache_dir, args.gpu, args.target))
    return EXIT_OK
