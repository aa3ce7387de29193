"""The OpenAPI 3.1 description of the HTTP API, served at GET /openapi.json."""

from __future__ import annotations

from automationd import __version__

ERROR = {
    "type": "object",
    "required": ["error", "field"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong."},
        "field": {"type": ["string", "null"], "description": "The offending field, e.g. [2].type."},
        "index": {"type": "integer", "description": "The bad item of a batch."},
    },
}


def _error(description: str) -> dict[str, object]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


EVENTS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/Event"},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/components/schemas/Event"},
                    },
                ]
            }
        }
    },
}
"""One event or a batch: what POST /events and POST /explain take."""

UNAUTHORIZED = _error("No valid bearer token (only when server.tokens_file is set).")

LETTER_FILTER: list[dict[str, object]] = [
    {
        "name": "automation",
        "in": "query",
        "description": "Only dead letters of automations matching this glob.",
        "schema": {"type": "string"},
    },
    {
        "name": "action",
        "in": "query",
        "description": "Only dead letters of this action kind (webhook, slack, ...).",
        "schema": {"type": "string"},
    },
    {
        "name": "before",
        "in": "query",
        "description": "Only dead letters that failed before this RFC 3339 time.",
        "schema": {"type": "string", "format": "date-time"},
    },
]

OPENAPI: dict[str, object] = {
    "openapi": "3.1.0",
    "info": {
        "title": "automationd",
        "version": __version__,
        "description": "Events in, automations matched, actions out, every step audited.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": ERROR,
            "Event": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "minLength": 1, "maxLength": 200},
                    "id": {"type": "string", "minLength": 1, "maxLength": 200},
                    "timestamp": {"type": "string", "format": "date-time"},
                    "message": {"type": "string"},
                    "event_name": {"type": "string"},
                    "tenant_id": {"type": ["string", "null"]},
                    "tenant_slug": {"type": ["string", "null"]},
                },
                "additionalProperties": True,
            },
            "Accepted": {
                "type": "object",
                "required": ["accepted"],
                "properties": {
                    "accepted": {"type": "array", "items": {"type": "string"}},
                    "duplicates": {"type": "array", "items": {"type": "string"}},
                    "duplicate": {"type": "boolean"},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/events": {
            "post": {
                "summary": "Accept one event or a batch; 202 once they are durable.",
                "requestBody": EVENTS_BODY,
                "responses": {
                    "202": _json(
                        "Accepted (and journaled).", {"$ref": "#/components/schemas/Accepted"}
                    ),
                    "400": _error("Malformed JSON or an event breaking the contract."),
                    "401": UNAUTHORIZED,
                    "408": _error("The body did not arrive within server.body_timeout."),
                    "413": _error("The body is larger than server.max_body_bytes."),
                    "429": _error("The queue is full; retry after Retry-After seconds."),
                    "503": _error(
                        "The journal or the audit trail cannot be written; nothing was accepted."
                    ),
                },
            }
        },
        "/explain": {
            "post": {
                "summary": "What the live rules would do with an event; nothing is sent.",
                "requestBody": EVENTS_BODY,
                "responses": {
                    "200": _json("The event and a verdict per automation."),
                    "400": _error("Malformed JSON or an event breaking the contract."),
                    "401": UNAUTHORIZED,
                    "408": _error("The body did not arrive within server.body_timeout."),
                    "413": _error("The body is too large."),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness.",
                "security": [],
                "responses": {"200": _json("The process answers.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": (
                    "Readiness: rules loaded, port bound, audit and state writable; the "
                    "Prefect subscription's state and destinations backing up "
                    "(destinations_backing_up) are shown, not checked."
                ),
                "security": [],
                "responses": {
                    "200": _json("Ready."),
                    "503": _json("Not ready, with the failing checks."),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/rules": {
            "get": {
                "summary": "The active rules (no secret values) and the last reload attempt.",
                "responses": {"200": _json("The rules."), "401": UNAUTHORIZED},
            }
        },
        "/reload": {
            "post": {
                "summary": "Reload the rules file now.",
                "responses": {
                    "200": _json("Applied or unchanged."),
                    "401": UNAUTHORIZED,
                    "422": _json("Rejected: the old rules stay; the problems are listed."),
                },
            }
        },
        "/slas": {
            "get": {
                "summary": "Armed SLA deadlines and agent health.",
                "responses": {"200": _json("Deadlines and agent SLAs."), "401": UNAUTHORIZED},
            }
        },
        "/dead-letters": {
            "get": {
                "summary": (
                    "Actions that failed for good, oldest first, a page at a time; "
                    "next_after is there when more follow."
                ),
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "description": "Only dead letters with a higher id.",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "At most this many (default 1000).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                    },
                    *LETTER_FILTER,
                ],
                "responses": {
                    "200": _json("The dead letters, their total and next_after."),
                    "400": _error("A parameter out of range."),
                    "401": UNAUTHORIZED,
                },
            },
            "delete": {
                "summary": (
                    "Drop the dead letters a filter selects, or all of them with all=true; "
                    "each is audited as dead_letter.dropped."
                ),
                "parameters": [
                    *LETTER_FILTER,
                    {
                        "name": "all",
                        "in": "query",
                        "description": "true: drop them all (needed when no filter is given).",
                        "schema": {"type": "string", "enum": ["true", "false"]},
                    },
                ],
                "responses": {
                    "200": _json("How many were dropped."),
                    "400": _error("No filter and no all=true, or a bad parameter."),
                    "401": UNAUTHORIZED,
                },
            },
        },
        "/dead-letters/{id}": {
            "delete": {
                "summary": "Drop one dead letter; audited as dead_letter.dropped.",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": {
                    "200": _json("Dropped."),
                    "401": UNAUTHORIZED,
                    "404": _error("No such dead letter."),
                },
            }
        },
        "/dead-letters/{id}/retry": {
            "post": {
                "summary": "Run a dead letter's action again.",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": {
                    "202": _json("Retrying."),
                    "401": UNAUTHORIZED,
                    "404": _error("No such dead letter."),
                    "409": _error("Its automation is no longer in the rules."),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "security": [],
                "responses": {"200": _json("OpenAPI 3.1.")},
            }
        },
    },
}
