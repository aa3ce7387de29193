"""The third pass: each section checked in turn, then the Config built if nothing is wrong.

The order matters where sections meet: secrets are declared before the fields naming them,
and the top-level blocks, retry policy and delivery bounds are known before the actions."""

from __future__ import annotations

from pathlib import Path

from automationd.actions.registry import Block
from automationd.events import EventTypeResolver
from automationd.rules.checks.actions import Surroundings
from automationd.rules.checks.audit import audit
from automationd.rules.checks.automations import automations
from automationd.rules.checks.core import Checker
from automationd.rules.checks.delivery import delivery, retry
from automationd.rules.checks.endpoints import endpoints
from automationd.rules.checks.event_types import event_types
from automationd.rules.checks.prefect import prefect
from automationd.rules.checks.reload import reload
from automationd.rules.checks.secrets import Secrets
from automationd.rules.checks.server import server
from automationd.rules.checks.slas import agent_slas, flow_slas
from automationd.rules.checks.smtp import smtp
from automationd.rules.checks.state import state
from automationd.rules.model import Config, RetryPolicy, StateConfig


def build(check: Checker, sha256: str, base: Path) -> Config | None:
    """The Config of the checked document, relative state paths under `base`; None when
    anything is wrong (`check.problems` says what)."""
    data = check.doc.data
    if not isinstance(data, dict):
        return None
    declared = Secrets(check)
    server_config = server(check, data.get("server") or {})
    audit_config = audit(check, data.get("audit") or {}, base)
    secrets = declared.declare(data.get("secrets"))
    smtp_settings = smtp(check, declared, data.get("smtp"))
    prefect_settings = prefect(check, declared, data.get("prefect"))
    endpoint_settings = endpoints(check, data.get("endpoints"))
    policy = retry(check, ("retry",), data.get("retry"), RetryPolicy()) or RetryPolicy()
    bounds = delivery(check, data.get("delivery") or {})
    reload_config = reload(check, data.get("reload") or {})
    types = event_types(check, data.get("event_types") or {})
    resolver = EventTypeResolver(types)
    blocks: set[Block] = set()
    if smtp_settings is not None:
        blocks.add("smtp")
    if prefect_settings is not None:
        blocks.add("prefect")
    around = Surroundings(declared, policy, bounds.give_up_after, frozenset(blocks))
    parsed_automations = automations(check, data.get("automations"), resolver, around)
    state_config = state(check, data.get("state"), base)
    flows = flow_slas(check, data.get("flow_slas"), resolver)
    agents = agent_slas(check, data.get("agent_slas"))
    declared.check_shapes()
    if (
        server_config is None
        or audit_config is None
        or parsed_automations is None
        or check.problems
    ):
        return None
    return Config(
        check.source,
        sha256,
        server_config,
        audit_config,
        types,
        parsed_automations,
        secrets,
        endpoint_settings,
        smtp_settings,
        policy,
        state_config or StateConfig(base / "state.db"),
        flows,
        agents,
        prefect_settings,
        bounds,
        reload_config,
    )
