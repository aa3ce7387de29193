"""`tls: {ca_file, insecure}` blocks (of `prefect:`, `endpoints:` and webhook actions):
the CA file is read and its SSL context built at load, so a missing or bad file stops it."""

from __future__ import annotations

import functools
import logging
import ssl
from pathlib import Path

from automationd.rules.checks.core import Checker, DocPath
from automationd.rules.model import ClientTls

log = logging.getLogger("automationd.config")  # the name the log has always printed


def client_tls(check: Checker, path: DocPath, raw: object, who: str) -> ClientTls | None:
    """A `tls:` block with its SSL context. `insecure` is logged as a warning at every load
    and reload (`who` names what it applies to), never silently taken."""
    if not isinstance(raw, dict) or not check.clean(path):
        return None
    insecure = bool(raw.get("insecure", False))
    if "ca_file" not in raw:
        if insecure:
            place = check.doc.position((*path, "insecure"))
            line = f":{place.line}" if place else ""
            log.warning(
                "%s%s: %s: tls.insecure is true: the server's certificate is NOT verified, "
                "so anyone on the network path can read and change these requests",
                check.source,
                line,
                who,
            )
        return ClientTls(insecure=insecure)
    ca_file = check.path(raw["ca_file"])
    if insecure:
        check.add(
            (*path, "insecure"),
            "insecure: true turns off the verification that ca_file is for; give one of them",
        )
        return None
    context = _trust(check, (*path, "ca_file"), ca_file)
    return None if context is None else ClientTls(str(ca_file), context=context)


def _trust(check: Checker, path: DocPath, ca_file: Path) -> ssl.SSLContext | None:
    """A client SSL context trusting the CA certificates (PEM) of `ca_file`."""
    try:
        pem = ca_file.read_bytes().decode("ascii", errors="replace")
    except OSError as exc:
        check.add(path, f"cannot read the CA file {ca_file}: {exc.strerror}")
        return None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        check.add(path, f"the CA file {ca_file} holds no PEM certificate")
        return None
    try:
        return _trusting(pem)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        check.add(path, f"the CA file {ca_file} is not a valid PEM certificate ({reason})")
        return None


@functools.lru_cache(maxsize=32)
def _trusting(ca_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly the CA certificates of `ca_pem`; raises
    ssl.SSLError when it holds none. Cached by content, so every action naming the same CA
    shares one context, across reloads too, and a changed file gets a new one."""
    if not ca_pem.strip():
        raise ssl.SSLError("no certificate")  # cadata="" would mean the system's CAs
    return ssl.create_default_context(cadata=ca_pem)
