"""The rules JSON Schema (`rules.schema.json`, the authority on the format) and the pass
that reports every violation of it, one problem per mistake, with a hint where one helps."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from automationd.rules.checks.core import Checker, DocPath, suggest


@cache
def schema() -> dict[str, Any]:
    """The rules JSON Schema shipped with the package."""
    text = resources.files("automationd").joinpath("rules.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


def check_schema(check: Checker) -> None:
    """Every schema violation, one problem per mistake: a required key that an unknown
    key's "did you mean" names is misspelt, not missing, so only the hint is reported."""
    errors = list(_validator().iter_errors(check.doc.data))
    meant: set[tuple[DocPath, str]] = set()
    for error in errors:
        if error.validator != "required":
            meant |= _schema_error(check, error)
    for error in errors:
        if error.validator == "required":
            path: DocPath = tuple(error.absolute_path)
            missing = error.message.removesuffix(" is a required property")  # 'name'
            if (path, missing) in meant:
                check.bad_paths.append(path)
            else:
                _schema_error(check, error)


def _schema_error(check: Checker, error: ValidationError) -> set[tuple[DocPath, str]]:
    """Report one schema error; returns, for unknown keys, the object's path and each key
    their "did you mean" names, quoted (`'name'`) as jsonschema's messages quote it."""
    path: DocPath = tuple(error.absolute_path)
    check.bad_paths.append(path)
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
        error.instance, dict
    ):
        return _unknown_keys(check, path, error.schema, error.instance)
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        key = error.instance
        if error.validator == "enum":
            choices = _strings(error.validator_value)
            listed = ", ".join(choices)
            message = f"unknown action kind '{key}'{suggest(key, choices)} (kinds: {listed})"
        else:
            message = f"'{key}' is not an allowed name here ({error.message})"
        check.add((*path, key), message, at_key=True)
        return set()
    message = error.message
    if error.validator in ("anyOf", "oneOf") and isinstance(error.schema, dict):
        description = error.schema.get("description")
        if description:
            message = f"{json.dumps(error.instance)[:80]} is not valid: {description}"
    elif error.validator == "enum" and isinstance(error.instance, str):
        message += suggest(error.instance, _strings(error.validator_value))
    elif error.validator in ("minProperties", "maxProperties") and path[-2:-1] == ("actions",):
        message = "an action needs exactly one key naming its kind, e.g. webhook: {url: ...}"
    check.add(path, message)
    return set()


def _unknown_keys(
    check: Checker, path: DocPath, subschema: object, instance: dict[str, Any]
) -> set[tuple[DocPath, str]]:
    """One problem per key of `instance` (at `path`) that `subschema` does not allow, with
    the allowed key it is closest to; returns those hinted keys (see `_schema_error`)."""
    allowed = _allowed_keys(subschema) if isinstance(subschema, dict) else set()
    meant: set[tuple[DocPath, str]] = set()
    for key in instance:
        if key not in allowed:
            hint = suggest(key, allowed)  # "; did you mean 'name'?" or ""
            check.add((*path, key), f"unknown key '{key}'{hint}", at_key=True)
            if hint:
                meant.add((path, hint.removeprefix("; did you mean ").removesuffix("?")))
    return meant


def _strings(values: object) -> list[str]:
    return [str(v) for v in values] if isinstance(values, list | tuple) else []


def _local_ref(ref: str) -> dict[str, Any]:
    node: Any = schema()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    result: dict[str, Any] = node
    return result


def _allowed_keys(subschema: Mapping[str, Any]) -> set[str]:
    keys = set(subschema.get("properties", {}))
    ref = subschema.get("$ref")
    if isinstance(ref, str):
        keys |= _allowed_keys(_local_ref(ref))
    return keys
