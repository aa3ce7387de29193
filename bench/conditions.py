"""What one `when:` condition costs per event: jmespath's interpreter vs the compiled closure.

Evaluates typical conditions on a typical flow run event, each many times, and prints
microseconds per evaluation for both and the speed-up; then 100 conditions per event, the
case of a rules file with 100 automations on one event type.

    .venv/bin/python bench/conditions.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jmespath

from automationd.jmescompile import compile_expression

EVENT: dict[str, Any] = {
    "type": "flow_run_state_change",
    "flow_name": "nightly-etl",
    "flow_run_name": "run-1",
    "state": "Failed",
    "state_type": "FAILED",
    "count": 12,
    "tags": ["prod", "etl", "eu"],
    "labels": {"team": "data", "tier": "1"},
}
CONDITIONS = [
    "count > `10`",
    "state == 'Failed' && flow_name == 'nightly-etl'",
    "contains(tags || `[]`, 'prod')",
    "labels.team == 'data' || labels.tier == '0'",
    "!(state_type == 'COMPLETED')",
    "length(tags[?starts_with(@, 'e')]) > `1`",
]


def per_call(function: Callable[[], object], calls: int, rounds: int) -> float:
    """Median microseconds per call over `rounds` rounds of `calls` calls."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(samples)


def main(rounds: int) -> None:
    print(f"median of {rounds} rounds; microseconds per evaluation")
    print(f"{'condition':<50} {'jmespath':>9} {'compiled':>9} {'speed-up':>9}")
    for text in CONDITIONS:
        parsed = jmespath.compile(text)
        compiled = compile_expression(parsed)
        assert compiled(EVENT) == parsed.search(EVENT), text
        slow = per_call(lambda: parsed.search(EVENT), 20_000, rounds)  # noqa: B023
        fast = per_call(lambda: compiled(EVENT), 20_000, rounds)  # noqa: B023
        print(f"{text:<50} {slow:>9.2f} {fast:>9.2f} {slow / fast:>8.1f}x")
    parsed_all = [jmespath.compile(CONDITIONS[i % len(CONDITIONS)]) for i in range(100)]
    compiled_all = [compile_expression(p) for p in parsed_all]
    slow = per_call(lambda: [p.search(EVENT) for p in parsed_all], 500, rounds)
    fast = per_call(lambda: [c(EVENT) for c in compiled_all], 500, rounds)
    print(f"{'100 conditions on one event':<50} {slow:>9.1f} {fast:>9.1f} {slow / fast:>8.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    main(parser.parse_args().rounds)
