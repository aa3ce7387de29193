"""Backoff with equal jitter: the capped doubling step and the wait drawn within it."""

from __future__ import annotations

import random

from automationd.backoff import doubled, equal_jitter
from automationd.rules import RetryPolicy


def test_the_step_doubles_up_to_its_cap() -> None:
    assert [doubled(0.5, n, 60.0) for n in (0, 1, 2, 6, 7, 16)] == [
        0.5,
        1.0,
        2.0,
        32.0,
        60.0,
        60.0,
    ]
    assert doubled(1.0, 8, 300.0) == 256.0
    assert doubled(1.0, 9, 300.0) == 300.0


def test_the_wait_is_half_fixed_half_random() -> None:
    rng = random.Random(17)
    assert [equal_jitter(step, rng) for step in (1.0, 2.0, 300.0)] == [
        0.7609919548562466,
        1.806690777118679,
        294.0742161485815,
    ]
    rng = random.Random(3)
    waits = [equal_jitter(10.0, rng) for _ in range(1000)]
    assert min(waits) >= 5.0
    assert max(waits) <= 10.0


def test_an_action_retry_waits_by_the_same_rule() -> None:
    rng = random.Random(17)
    policy = RetryPolicy()  # 1 s doubling up to 300 s: steps 1, 2, ..., 300 from the 10th
    assert [policy.delay(attempt, None, rng) for attempt in (1, 2, 10)] == [
        0.7609919548562466,
        1.806690777118679,
        294.0742161485815,
    ]
