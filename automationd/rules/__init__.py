"""The rules: what a rules file says, as frozen objects (`model`, re-exported here), and how
a file becomes them (`load`: `load_config`, `parse_config`, `ConfigError`, `state_base`;
`schema`; `build` with the per-section `checks`).

Only the model is re-exported: the loader asks the action kinds (`actions.registry`) how to
parse their blocks, and the action kinds import the settings of this model, so importing the
loader here would make the two packages import each other."""

from automationd.rules.model import (
    DEFAULT_GIVE_UP_AFTER,
    DEFAULT_SERVER,
    DEFAULT_TIMEOUT,
    AgentSla,
    AuditConfig,
    Automation,
    ClientTls,
    Config,
    Cooldown,
    DeliveryConfig,
    Endpoints,
    FlowSla,
    Matcher,
    PrefectSettings,
    ReloadConfig,
    RetryPolicy,
    ServerConfig,
    SmtpSettings,
    StateConfig,
)

__all__ = [
    "DEFAULT_GIVE_UP_AFTER",
    "DEFAULT_SERVER",
    "DEFAULT_TIMEOUT",
    "AgentSla",
    "AuditConfig",
    "Automation",
    "ClientTls",
    "Config",
    "Cooldown",
    "DeliveryConfig",
    "Endpoints",
    "FlowSla",
    "Matcher",
    "PrefectSettings",
    "ReloadConfig",
    "RetryPolicy",
    "ServerConfig",
    "SmtpSettings",
    "StateConfig",
]
