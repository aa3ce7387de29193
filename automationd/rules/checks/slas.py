"""The `flow_slas:` and `agent_slas:` sections: deadlines on flow runs and on the health
of agents, each with a unique id and durations longer than 0."""

from __future__ import annotations

from automationd.events import EventTypeResolver
from automationd.rules.checks.attributes import matchers
from automationd.rules.checks.core import Checker, DocPath
from automationd.rules.model import AgentSla, FlowSla


def flow_slas(check: Checker, raw: object, resolver: EventTypeResolver) -> tuple[FlowSla, ...]:
    """The flow SLAs the schema found sound; their matchers name flow run attributes."""
    slas: list[FlowSla] = []
    first: dict[str, int] = {}
    flow_run = [resolver("flow_run_state_change")]  # with attributes event_types: added
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        path: DocPath = ("flow_slas", i)
        if not isinstance(item, dict) or not check.clean(path):
            continue
        sla_id = str(item["id"])
        check.unique((*path, "id"), sla_id, first, "flow SLA id")
        found = matchers(check, (*path, "match"), item.get("match"), flow_run)
        duration = check.seconds((*path, "duration"), item["duration"], 1.0)
        slas.append(FlowSla(sla_id, str(item["kind"]), duration, found))
    return tuple(slas)


def agent_slas(check: Checker, raw: object) -> tuple[AgentSla, ...]:
    """The agent SLAs the schema found sound, one per agent config."""
    slas: list[AgentSla] = []
    first: dict[str, int] = {}
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        path: DocPath = ("agent_slas", i)
        if not isinstance(item, dict) or not check.clean(path):
            continue
        config_id = str(item["agent_config_id"])
        check.unique((*path, "agent_config_id"), config_id, first, "agent SLA for")
        window = check.seconds((*path, "window"), item["window"], 1.0)
        slas.append(AgentSla(config_id, int(item["min_healthy"]), window))
    return tuple(slas)
