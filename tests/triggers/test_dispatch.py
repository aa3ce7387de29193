"""The trigger seam: each due deadline goes to the trigger of its kind, and GET /slas is
every trigger's listing merged, in the order the triggers are kept."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from automationd.audit import AuditLog
from automationd.rules.load import parse_config
from automationd.store.sqlite import SqliteStore
from automationd.triggers import Triggers
from automationd.triggers.agent_sla import AGENT_SLA, AgentSlas
from automationd.triggers.flow_sla import FLOW_SLA, FlowSlas
from tests.triggers.test_sla import ManualDeadlines

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)

RULES = b"""\
version: 1
automations: []
agent_slas:
  - {agent_config_id: prod, min_healthy: 1, window: 1m}
"""


def clock() -> datetime:
    return T0


def test_each_kind_has_one_trigger() -> None:
    assert (FlowSlas.kinds, AgentSlas.kinds) == ((FLOW_SLA,), (AGENT_SLA,))


async def test_due_deadlines_go_to_their_kind_and_unknown_kinds_are_dropped(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.open()
    audit = AuditLog(tmp_path / "audit.jsonl", fsync="never", clock=clock)
    audit.open()
    emitted: list[dict[str, object]] = []

    async def emit(event: dict[str, object]) -> None:
        emitted.append(event)

    triggers = Triggers(ManualDeadlines(), store, audit, emit, clock)
    triggers.configure(parse_config(RULES, tmp_path / "rules.yaml"))
    assert list(triggers.listing()) == ["flow_deadlines", "agent_slas"]

    await triggers.on_due("no_such_kind", "prod", {"agent_config_id": "prod"})
    assert emitted == []
    await triggers.on_due(AGENT_SLA, "prod", {"agent_config_id": "prod"})
    assert [e["type"] for e in emitted] == ["agent_sla_failure"]
    payload: dict[str, object] = {
        "sla": "start",
        "kind": "SCHEDULED_NOT_STARTED",
        "flow_run_id": "run-1",
        "anchor": T0.timestamp(),
        "duration": 60.0,
        "attributes": {"flow_name": "etl"},
    }
    await triggers.on_due(FLOW_SLA, "start\x1frun-1", payload)
    assert [e["type"] for e in emitted] == ["agent_sla_failure", "flow_sla_failure"]
    audit.close()
    store.close()
