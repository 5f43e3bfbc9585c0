"""The order tests start in, for two xdist workers (`pytest -n 2`, the README's command): the longest first,
so that the run does not end with one worker on a long test while the other waits (xdist's `load` sends
each worker the next test in this order as it frees up). tests/durations.json holds each slow test's
seconds (from a `--durations` listing, params folded into their function); a test not listed counts as
short and keeps its place among the rest, after the listed ones. Refresh the file when the slow tests
change: a stale one only orders worse.

A module whose fixtures have module scope keeps its tests side by side, placed by their sum, so that a
worker sets those fixtures up once. (`--dist loadgroup` would keep such a module on one worker, but with
pytest 9.2 and pytest-xdist 3.8 it groups nothing: xdist renames the items' `_nodeid`, which pytest 9 no
longer reads.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

SECONDS: dict[str, float] = json.loads((Path(__file__).with_name("durations.json")).read_text())
TOGETHER = ("test_farm.py", "test_docs_site.py", "test_framework_seam.py")  # fixtures of module scope


def expected(item) -> float:
    return SECONDS.get(re.sub(r"\[.*\]$", "", item.nodeid), 0)


def pytest_collection_modifyitems(config, items) -> None:
    together: dict[str, float] = {}
    for item in items:
        if item.path.name in TOGETHER:
            together[item.path.name] = together.get(item.path.name, 0) + expected(item)
    weight = {id(item): together.get(item.path.name, expected(item)) for item in items}
    place = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-weight[id(item)], place[id(item)]))
