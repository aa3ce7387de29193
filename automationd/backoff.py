"""Exponential backoff with "equal jitter": how long to wait before trying again.

The step doubles with each failure up to a cap; the wait is half the step fixed and half
random, so that many callers failing together (the actions on one dead destination, a
daemon's reconnections) do not retry in lockstep, and none waits less than half its step.
Action retries (`RetryPolicy.delay`) and the Prefect subscription's reconnections use it.
"""

from __future__ import annotations

import random


def doubled(first: float, doublings: int, cap: float) -> float:
    """`first` doubled `doublings` times, at most `cap`. A caller whose count of failures
    has no bound stops `doublings` growing itself (2.0 ** 1024 overflows)."""
    return min(cap, first * 2.0**doublings)


def equal_jitter(step: float, rng: random.Random) -> float:
    """A wait from `step` / 2 to `step`: half of it fixed, half drawn from `rng`."""
    return step / 2 + rng.uniform(0, step / 2)
