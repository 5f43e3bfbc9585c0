"""A seed for the tests that take a sample of their cases each run (the fuzz tests, a signal at a random
moment): another sample each run, so the suite covers every case over time while each run covers every
kind of case once. The seed is printed and named in each failure; TRTBUILD_TEST_SEED=N repeats a run."""

from __future__ import annotations

import os
import random

VARIABLE = "TRTBUILD_TEST_SEED"


def seeded(test: str) -> tuple[random.Random, str]:
    """(a random generator for `test`, the line that repeats this run: print it, put it in failures)."""
    given = os.environ.get(VARIABLE)
    seed = int(given) if given else random.SystemRandom().randrange(2**32)
    told = f"{test}: seed {seed} ({VARIABLE}={seed} repeats this sample)"
    print(told)
    return random.Random(f"{test}:{seed}"), told


def cover(options: list, values: list, rng: random.Random) -> list[tuple]:
    """(option, value) pairs where every value appears once and every option at least once (each value on
    an option picked at random, the options dealt out first): the same kinds of input as every pair, in
    len(values) cases instead of len(options) * len(values). Needs len(values) >= len(options)."""
    assert len(values) >= len(options), (options, values)
    dealt = rng.sample(options, len(options)) + [rng.choice(options) for _ in values[len(options):]]
    return list(zip(dealt, rng.sample(values, len(values))))
