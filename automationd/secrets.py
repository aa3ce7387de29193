"""Secrets: named credentials resolved from the environment, a file or a systemd credential.

A `Secret` never shows its value in `repr()` or `str()`; only the code that sends it calls
`reveal()`. `Redactor` replaces every known secret value in text bound for the audit trail or
the log, as a second line of defence behind never putting them there. A rules file read
without its secrets (`automationd check`, `automationd test`) holds `Secret.unresolved`
placeholders: their names are known, their values are not, and revealing one is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

MASK = "********"


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential. repr() and str() never show it; reveal() only where it is sent."""

    name: str
    _value: str = field(repr=False)

    def __str__(self) -> str:
        return MASK

    @classmethod
    def unresolved(cls, name: str) -> Secret:
        """A secret declared but not looked up (rules read without their secrets)."""
        return cls(name, "")

    @property
    def resolved(self) -> bool:
        """Whether the value is known (resolve() never gives an empty one)."""
        return bool(self._value)

    def reveal(self) -> str:
        if not self._value:
            raise SecretError(f"secret '{self.name}' is not resolved (rules read without secrets)")
        return self._value


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where a secret's value comes from: `env`, `file` or `credential`, and which one."""

    name: str
    kind: str
    ref: str

    def describe(self) -> str:
        """Where the value is looked up, for error messages (never the value)."""
        return {
            "env": f"environment variable {self.ref}",
            "file": f"file {self.ref}",
            "credential": f"systemd credential {self.ref}",
        }[self.kind]


class SecretError(Exception):
    """A secret that cannot be resolved; the message names it and never holds its value."""


def resolve(source: SecretSource, environ: Mapping[str, str]) -> Secret:
    """The value of one secret; raises SecretError saying why it is missing."""
    if source.kind == "env":
        value = environ.get(source.ref)
        if value is None:
            raise SecretError(
                f"secret '{source.name}': environment variable {source.ref} is not set"
            )
    else:
        if source.kind == "credential":
            directory = environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise SecretError(
                    f"secret '{source.name}': $CREDENTIALS_DIRECTORY is not set "
                    "(systemd sets it for LoadCredential=)"
                )
            path = Path(directory) / source.ref
        else:
            path = Path(source.ref)
        try:
            value = path.read_text("utf-8").removesuffix("\n").removesuffix("\r")
        except OSError as exc:
            raise SecretError(
                f"secret '{source.name}': cannot read {source.describe()} ({exc.strerror})"
            ) from None
        except UnicodeDecodeError:
            raise SecretError(
                f"secret '{source.name}': {source.describe()} is not UTF-8 text"
            ) from None
    if not value:
        raise SecretError(f"secret '{source.name}': {source.describe()} is empty")
    return Secret(source.name, value)


class Redactor:
    """Replaces every secret value (and its URL-quoted form) in text with `********`."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        known = [s.reveal() for s in secrets if s.resolved]
        values = set(known) | {quote(v, safe="") for v in known}
        ordered = sorted((v for v in values if v), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def optional(self, text: str | None) -> str | None:
        """redact() for a value that may be None."""
        return None if text is None else self(text)
