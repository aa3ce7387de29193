"""The `secrets:` section and every `*_secret` field naming one of its secrets.

Each declared secret is resolved (read from its environment variable, file or systemd
credential) unless `resolve_secrets` is off; a field must name a declared secret, and one
that needs a given shape (a webhook URL) must find it in the value, which no problem shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from automationd.rules.checks.core import Checker, DocPath, suggest
from automationd.secrets import Secret, SecretError, SecretSource, resolve


def _is_http_url(value: str) -> bool:
    """An absolute http(s) URL with a host and no whitespace (Slack's and Teams' webhooks)."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and not any(c.isspace() for c in value)


SECRET_SHAPES: Mapping[str, tuple[str, Callable[[str], bool]]] = {
    "webhook_url_secret": ("an http(s) URL", _is_http_url),
}
"""`*_secret` field -> what its secret's value must be, and the test of it."""


class Secrets:
    """The declared secrets of one document, and the fields that name them."""

    def __init__(self, check: Checker) -> None:
        self.check = check
        self.names: set[str] = set()
        self.sources: dict[str, SecretSource] = {}
        self.resolved: dict[str, Secret] = {}
        self.refs: list[tuple[DocPath, str]] = []
        """Every `*_secret` field naming a declared secret, for `check_shapes`."""

    def declare(self, raw: object) -> dict[str, Secret]:
        """Resolve every declared secret; a missing one is a problem naming it, never its
        value. Without `resolve_secrets`, each is an unresolved placeholder and nothing is
        read."""
        check = self.check
        if not isinstance(raw, dict):
            return self.resolved
        for name, spec in raw.items():
            self.names.add(name)
            if not check.clean(("secrets", name)) or not isinstance(spec, dict):
                continue
            ((kind, ref),) = spec.items()
            source = SecretSource(name, kind, str(ref))
            self.sources[name] = source
            if not check.resolve_secrets:
                self.resolved[name] = Secret.unresolved(name)
                continue
            try:
                self.resolved[name] = resolve(source, check.environ)
            except SecretError as exc:
                check.add(("secrets", name), str(exc), at_key=True)
        return self.resolved

    def ref(self, path: DocPath, name: object) -> None:
        """A `*_secret` field must name a declared secret."""
        if not isinstance(name, str):
            return
        if name not in self.names:
            hint = suggest(name, self.names)
            self.check.add(path, f"unknown secret '{name}'{hint} (declare it under secrets:)")
            return
        self.refs.append((path, name))

    def check_shapes(self) -> None:
        """Each resolved secret a field needs in a given shape (a webhook URL) has it; a
        problem at every field naming one that does not, with the secret's name and source,
        never its value."""
        for path, name in self.refs:
            shape = SECRET_SHAPES.get(str(path[-1]))
            secret = self.resolved.get(name)
            if shape is None or secret is None or not secret.resolved:
                continue
            what, fits = shape
            if not fits(secret.reveal()):
                source = self.sources[name].describe()
                self.check.add(
                    path,
                    f"secret '{name}' ({source}) is not {what}, which a {path[-2]} "
                    f"{path[-1]} must be (its value is not shown)",
                )
