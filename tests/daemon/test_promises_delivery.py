"""Delivery promises of the README that had no test of their own (issue 16, item 1), each
through the real daemon: a 429's Retry-After waited for and cut to an hour, Twilio's body cut
to 1,600 characters, an email some recipients refuse counting as sent, email by STARTTLS
(and an untrusted certificate refused), the `dead_letter.retried` record, and actions in
flight finishing under the rules they started with across a reload."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.certificates import private_ca
from tests.standins import Twilio, play
from tests.support import (
    Mailbox,
    audit_records,
    daemon,
    receiver,
    run_cli,
    smtp_server,
    until,
)

HEAD = 'version: 1\nserver: {listen: "127.0.0.1:0"}\naudit: {path: audit.jsonl}\n'
OUTCOMES = ("action.succeeded", "action.failed")


def records(tmp_path: Path, *kinds: str) -> list[dict[str, object]]:
    """The audit records of these kinds (every record without kinds), in file order."""
    every = audit_records(tmp_path / "audit.jsonl")
    return [r for r in every if not kinds or r["kind"] in kinds]


async def recorded(tmp_path: Path, count: int, *kinds: str, within: float = 30.0) -> None:
    """Wait until the audit trail holds `count` records of these kinds, together; then check
    that it holds no more than that."""

    async def enough() -> bool:
        try:
            return len(records(tmp_path, *kinds)) >= count
        except FileNotFoundError:
            return False

    await until(enough, within)
    assert len(records(tmp_path, *kinds)) == count, records(tmp_path, *kinds)


async def http_json(method: str, url: str) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status, await response.json()


# --- a destination that answers when the test says so, and says when each request arrived ---


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: object
    at: float  # time.monotonic() when the request arrived


@dataclass
class Scripted:
    """A real HTTP server on 127.0.0.1 answering each path from a script: per path, answers
    (status, headers, gate) given in turn (then 200), each held until its gate is set."""

    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str], asyncio.Event | None]]] = field(
        default_factory=dict
    )

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = json.loads(await request.read())
        self.hits.append(Hit(request.path, dict(request.headers), body, arrived))
        status, headers, gate = (self.script.get(request.path) or [(200, {}, None)]).pop(0)
        if gate is not None:
            await gate.wait()
        return web.Response(status=status, text="{}", headers=headers)

    def on(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    async def wait_for(self, path: str, count: int, within: float = 30.0) -> list[Hit]:
        async def arrived() -> bool:
            return len(self.on(path)) >= count

        await until(arrived, within)
        return self.on(path)


@asynccontextmanager
async def scripted() -> AsyncIterator[Scripted]:
    server = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


# --- 1. Retry-After ---


async def test_a_retry_after_is_waited_for_between_the_two_attempts(tmp_path: Path) -> None:
    """A 429 with `Retry-After: 2` (the back-off being 10 ms): the second attempt reaches
    the destination no sooner than 2 s after the first, and not much later."""
    async with scripted() as dest:
        dest.script["/limited"] = [(429, {"Retry-After": "2"}, None)]
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            HEAD
            + "retry: {initial: 10ms, max: 10ms}\n"
            + "automations:\n  - name: limited\n    on: [job_done]\n"
            + f'    actions: [{{webhook: {{url: "{dest.url}/limited"}}}}]\n'
        )
        async with daemon(rules) as proc:
            assert (await proc.post({"type": "job_done", "id": "e1"}))[0] == 202
            first, second = await dest.wait_for("/limited", 2)
            await recorded(tmp_path, 1, *OUTCOMES)
            assert await proc.stop() == 0
    gap = second.at - first.at
    assert 1.95 <= gap < 10.0, gap
    (waited, _) = records(tmp_path, "action.attempt")
    (outcome,) = records(tmp_path, *OUTCOMES)
    assert (outcome["kind"], outcome["attempts"]) == ("action.succeeded", 2)
    assert (waited["status"], waited["retryable"], waited["retry_in_s"]) == (429, True, 2.0)


async def test_a_retry_after_longer_than_an_hour_is_cut_to_an_hour(tmp_path: Path) -> None:
    """`Retry-After: 86400` is honoured up to an hour: the next attempt is due in exactly
    3600 s (an action living 2 h waits for it); an action with the default life of an hour
    cannot wait that long and is dead-lettered at once, saying why."""
    async with receiver() as recv:
        slow_down = (429, "slow down", {"Retry-After": "86400"})
        recv.replies["/long-life"] = [slow_down]
        recv.replies["/default-life"] = [slow_down]
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            HEAD
            + "retry: {initial: 10ms, max: 10ms}\n"
            + "automations:\n"
            + "  - name: long-life\n    on: [job_done]\n"
            + f'    actions: [{{webhook: {{url: "{recv.url}/long-life", give_up_after: 2h}}}}]\n'
            + "  - name: default-life\n    on: [job_done]\n"
            + f'    actions: [{{webhook: {{url: "{recv.url}/default-life"}}}}]\n'
        )
        async with daemon(rules) as proc:
            assert (await proc.post({"type": "job_done", "id": "e1"}))[0] == 202
            await recorded(tmp_path, 2, "action.attempt")
            await recorded(tmp_path, 1, "action.dead_lettered")
            by_automation = {str(r["automation"]): r for r in records(tmp_path, "action.attempt")}
            assert sorted(by_automation) == ["default-life", "long-life"]
            for attempt in by_automation.values():
                assert (attempt["status"], attempt["retryable"]) == (429, True)
                assert attempt["retry_in_s"] == 3600.0
            (failed,) = records(tmp_path, "action.failed")
            assert failed["automation"] == "default-life"
            assert failed["attempts"] == 1
            assert str(failed["error"]).startswith(
                "gave up after 3600 s (delivery.give_up_after): "
                "the next attempt would be due in 3600 s; "
            )
            # the long-lived one waits: no outcome, no second request (not stopped here:
            # a SIGTERM would give it 30 s to finish)
            assert [str(r["automation"]) for r in records(tmp_path, *OUTCOMES)] == ["default-life"]
            assert sorted(r.path for r in recv.requests) == ["/default-life", "/long-life"]
            # and it is still pending at its destination (both share the receiver's
            # host:port; the other has its outcome): backing off, not dropped
            destination = recv.url.removeprefix("http://")

            async def one_pending() -> bool:
                return await pending_at(proc.url, destination) == 1.0

            await until(one_pending, within=10)
            assert [str(r["automation"]) for r in records(tmp_path, *OUTCOMES)] == ["default-life"]
            assert len(records(tmp_path, "action.dead_lettered")) == 1
            status, letters = await http_json("GET", f"{proc.url}/dead-letters")
            assert status == 200, letters
            assert isinstance(letters, dict)
            assert letters["total"] == 1, letters
            assert sorted(r.path for r in recv.requests) == ["/default-life", "/long-life"]


async def pending_at(url: str, destination: str) -> float | None:
    """`automationd_actions_pending` of one destination, from GET /metrics (None: no
    sample)."""
    sample = f'automationd_actions_pending{{destination="{destination}"}} '
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        for line in (await response.text()).splitlines():
            if line.startswith(sample):
                return float(line.removeprefix(sample))
    return None


# --- 2. Twilio's 1,600 characters ---


async def test_twilio_bodies_are_cut_to_1600_characters(tmp_path: Path) -> None:
    """A message of 1,600 characters reaches Twilio whole; one of 2,000 arrives as 1,600: its
    first 1,599 and an ellipsis (`é` is two bytes in UTF-8: characters are counted, not
    bytes). Both go to the Twilio stand-in, which checks the Messages API's wire format
    (form-encoded, Basic auth, `To`, sender, `Body` of at most 1,600 characters)."""
    exact = "é" * 1600
    longer = "é" * 1000 + "x" * 1000
    async with receiver() as recv:
        twilio = play(recv, Twilio("AC1", "tw"))
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            HEAD
            + "secrets: {twilio: {env: TWILIO_TOKEN}}\n"
            + f'endpoints: {{twilio: "{recv.url}"}}\n'
            + "automations:\n  - name: text\n    on: [job_done]\n    actions:\n"
            + "      - twilio: {account_sid: AC1, auth_token_secret: twilio,"
            + ' messaging_service_sid: MG1, phone_numbers: ["+15550100"], message: "{text}"}\n'
        )
        async with daemon(rules, env={"TWILIO_TOKEN": "tw"}) as proc:
            assert (await proc.post({"type": "job_done", "id": "exact", "text": exact}))[0] == 202
            await recv.wait_for(1)
            assert (await proc.post({"type": "job_done", "id": "long", "text": longer}))[0] == 202
            first, second = await recv.wait_for(2)
            assert await proc.stop() == 0
    assert isinstance(first.body, dict)
    assert isinstance(second.body, dict)
    assert first.body["Body"] == exact
    assert second.body["Body"] == longer[:1599] + "…"
    assert len(second.body["Body"]) == 1600
    assert twilio.malformed == []
    outcomes = [(r["event_id"], r["kind"], r["status"]) for r in records(tmp_path, *OUTCOMES)]
    assert outcomes == [("exact", "action.succeeded", 201), ("long", "action.succeeded", 201)]


# --- 3. An email some recipients refuse ---


async def test_an_email_some_recipients_refuse_is_sent_once_and_says_who(tmp_path: Path) -> None:
    """To ok@ and refused@ (550 at RCPT): one message goes to ok@ alone, the action succeeds
    at its first attempt with the refusal in its audit records, is not retried and leaves no
    dead letter."""
    mailbox = Mailbox(refuse={"refused@example.com"})
    async with smtp_server(mailbox) as port:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            HEAD
            + f"smtp: {{host: 127.0.0.1, port: {port}, from: bot@example.com}}\n"
            + "retry: {initial: 10ms, max: 10ms}\n"
            + "automations:\n  - name: mail\n    on: [job_done]\n    actions:\n"
            + '      - email: {to_emails: [ok@example.com, refused@example.com], subject: "{id}"}\n'
        )
        async with daemon(rules) as proc:
            assert (await proc.post({"type": "job_done", "id": "e1"}))[0] == 202
            await recorded(tmp_path, 1, *OUTCOMES)
            assert await http_json("GET", f"{proc.url}/dead-letters") == (
                200,
                {"dead_letters": [], "total": 0},
            )
            assert await proc.stop() == 0
    (envelope,) = mailbox.messages
    assert envelope.rcpt_tos == ["ok@example.com"]
    assert isinstance(envelope.content, bytes)
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert (message["Subject"], message["To"]) == ("e1", "ok@example.com, refused@example.com")
    (attempt,) = records(tmp_path, "action.attempt")
    assert (attempt["attempt"], attempt["ok"], attempt["status"]) == (1, True, 250)
    assert attempt["response"] == (
        "Message accepted for delivery; refused: refused@example.com: 550 5.1.1 no such user"
    )
    (outcome,) = records(tmp_path, *OUTCOMES, "action.dead_lettered")
    assert (outcome["kind"], outcome["attempts"], outcome["status"]) == (
        "action.succeeded",
        1,
        250,
    )
    assert outcome["response"] == attempt["response"]


# --- 4. SMTP by STARTTLS ---


@dataclass
class TlsMailbox(Mailbox):
    """A Mailbox that also keeps, per delivered message, the TLS session it came over, and
    every login tried (AUTH mechanism, user name), whether right or wrong."""

    tls: list[dict[str, object] | None] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.tls.append(session.ssl)
        return await super().handle_DATA(server, session, envelope)


LOGIN = ("bot", "smtp-pa55")


@asynccontextmanager
async def starttls_server(mailbox: TlsMailbox, tls: ssl.SSLContext) -> AsyncIterator[int]:
    """A real aiosmtpd on a free loopback port that offers STARTTLS with `tls` and refuses
    everything but EHLO, STARTTLS and QUIT before it (`require_starttls`); AUTH is required
    and, as aiosmtpd requires by default, only over TLS."""

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        name = data.login.decode() if isinstance(data, LoginPassword) else repr(data)
        mailbox.logins.append((mechanism, name))
        ok = (
            isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == LOGIN
        )
        return AuthResult(success=ok, handled=False)

    def protocol() -> SMTP:
        return SMTP(
            mailbox,
            hostname="mail.test",
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            authenticator=authenticate,
        )

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def smtp_rules(tmp_path: Path, port: int, *, starttls: bool, login: bool = True) -> Path:
    rules = tmp_path / "rules.yaml"
    secrets = "secrets: {smtp-password: {env: SMTP_PASSWORD}}\n" if login else ""
    account = ", username: bot, password_secret: smtp-password" if login else ""
    rules.write_text(
        HEAD
        + secrets
        + f"smtp: {{host: 127.0.0.1, port: {port}, starttls: {str(starttls).lower()},"
        + f" from: bot@example.com{account}}}\n"
        + "retry: {attempts: 2, initial: 10ms, max: 10ms}\n"
        + "automations:\n  - name: mail\n    on: [job_done]\n"
        + '    actions: [{email: {to_emails: [ops@example.com], subject: "{id}"}}]\n'
    )
    return rules


async def test_email_goes_by_starttls_to_a_server_that_requires_it(tmp_path: Path) -> None:
    """`smtp: {starttls: true}` against a real aiosmtpd that requires STARTTLS (and AUTH
    over TLS only): the message arrives, over a TLS session the server recorded, after a
    login. (The daemon trusts the system's CAs for SMTP; here the test CA stands in for them
    through SSL_CERT_FILE.) Without STARTTLS the same server refuses the mail (530), so it
    cannot have come in the clear."""
    mailbox = TlsMailbox()
    async with starttls_server(mailbox, private_ca(tmp_path)) as port:
        env = {"SMTP_PASSWORD": LOGIN[1], "SSL_CERT_FILE": str(tmp_path / "ca.pem")}
        async with daemon(smtp_rules(tmp_path, port, starttls=True), env=env) as proc:
            assert (await proc.post({"type": "job_done", "id": "by-tls"}))[0] == 202
            await recorded(tmp_path, 1, *OUTCOMES)
            assert await proc.stop() == 0
        (outcome,) = records(tmp_path, *OUTCOMES)
        assert (outcome["kind"], outcome["attempts"]) == ("action.succeeded", 1), outcome
        (envelope,) = mailbox.messages
        assert envelope.rcpt_tos == ["ops@example.com"]
        assert isinstance(envelope.content, bytes)
        assert email.message_from_bytes(envelope.content)["Subject"] == "by-tls"
        (session_tls,) = mailbox.tls
        assert session_tls is not None
        ssl_object = session_tls["ssl_object"]
        assert isinstance(ssl_object, ssl.SSLObject)
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        assert [name for _, name in mailbox.logins] == ["bot"]  # one login (over TLS only)

        (tmp_path / "audit.jsonl").unlink()
        clear = smtp_rules(tmp_path, port, starttls=False, login=False)
        async with daemon(clear, env=env) as proc:
            assert (await proc.post({"type": "job_done", "id": "in-clear"}))[0] == 202
            await recorded(tmp_path, 1, *OUTCOMES)
            assert await proc.stop() == 0
    assert len(mailbox.messages) == 1
    (failed,) = records(tmp_path, "action.failed")
    assert (failed["event_id"], failed["attempts"], failed["status"]) == ("in-clear", 1, 530)
    assert "Must issue a STARTTLS command first" in str(failed["error"])


async def test_email_by_starttls_refuses_an_untrusted_certificate(tmp_path: Path) -> None:
    """The SMTP server's certificate is checked: signed by a CA the daemon does not trust,
    nothing is sent (no login, no message) and the action fails after its attempts, each
    saying the certificate could not be verified."""
    mailbox = TlsMailbox()
    async with starttls_server(mailbox, private_ca(tmp_path)) as port:
        env = {"SMTP_PASSWORD": LOGIN[1], "SSL_CERT_FILE": str(tmp_path / "no-such-ca.pem")}
        async with daemon(smtp_rules(tmp_path, port, starttls=True), env=env) as proc:
            assert (await proc.post({"type": "job_done", "id": "untrusted"}))[0] == 202
            await recorded(tmp_path, 1, *OUTCOMES)
            assert await proc.stop() == 0
    assert mailbox.messages == []
    assert mailbox.logins == []  # not even tried: the password never left the daemon
    tried = records(tmp_path, "action.attempt")
    assert [(a["attempt"], a["ok"]) for a in tried] == [(1, False), (2, False)]
    for attempt in tried:
        assert "CERTIFICATE_VERIFY_FAILED" in str(attempt["error"]), attempt
    (failed,) = records(tmp_path, "action.failed")
    assert failed["attempts"] == 2


# --- 5. dead_letter.retried ---


async def test_a_retried_dead_letter_is_audited_as_dead_letter_retried(tmp_path: Path) -> None:
    """Each dead letter retried, by POST /dead-letters/{id}/retry or by `automationd
    dead-letters retry`, leaves one `dead_letter.retried` record (letter, event, automation,
    action index) before the run's attempts; a retry that succeeds ends with
    `dead_letter.resolved`, one that fails again does not."""
    async with receiver() as recv:
        recv.status["/fixed"] = 400
        recv.status["/broken"] = 400
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            HEAD
            + "retry: {attempts: 1}\n"
            + "automations:\n"
            + "  - name: fixed-later\n    on: [job_done]\n    match: {target: fixed}\n"
            + f'    actions: [{{webhook: {{url: "{recv.url}/fixed"}}}}]\n'
            + "  - name: still-broken\n    on: [job_done]\n    match: {target: broken}\n"
            + f'    actions: [{{webhook: {{url: "{recv.url}/x"}}}},'
            + f' {{webhook: {{url: "{recv.url}/broken"}}}}]\n'
        )
        async with daemon(rules) as proc:
            events = [
                {"type": "job_done", "id": "a", "target": "fixed"},
                {"type": "job_done", "id": "b", "target": "fixed"},
                {"type": "job_done", "id": "c", "target": "broken"},
            ]
            assert (await proc.post(events))[0] == 202
            await recorded(tmp_path, 3, "action.dead_lettered")
            letter = {
                str(r["event_id"]): int(str(r["letter"]))
                for r in records(tmp_path)
                if r["kind"] == "action.dead_lettered"
            }
            recv.status["/fixed"] = 200
            status, answer = await http_json("POST", f"{proc.url}/dead-letters/{letter['a']}/retry")
            assert (status, answer) == (202, {"retrying": letter["a"]})
            code, out, err = await run_cli(
                "dead-letters", "retry", str(letter["b"]), str(letter["c"]), "--url", proc.url
            )
            assert (code, out) == (0, f"retrying {letter['b']}\nretrying {letter['c']}\n"), err
            await recorded(tmp_path, 7, *OUTCOMES)  # 4 before the retries, 3 after
            await recorded(tmp_path, 2, "dead_letter.resolved")
            assert await proc.stop() == 0
    retried = records(tmp_path, "dead_letter.retried")
    assert [{k: v for k, v in r.items() if k != "time"} for r in retried] == [
        {
            "kind": "dead_letter.retried",
            "letter": letter["a"],
            "event_id": "a",
            "automation": "fixed-later",
            "action_index": 0,
        },
        {
            "kind": "dead_letter.retried",
            "letter": letter["b"],
            "event_id": "b",
            "automation": "fixed-later",
            "action_index": 0,
        },
        {
            "kind": "dead_letter.retried",
            "letter": letter["c"],
            "event_id": "c",
            "automation": "still-broken",
            "action_index": 1,
        },
    ]
    for r in retried:
        assert isinstance(r["time"], str)
    # each event's story after its letter: retried, then the run's attempt and outcome
    for event_id, index, ending in [
        ("a", 0, ["action.succeeded", "dead_letter.resolved"]),
        ("b", 0, ["action.succeeded", "dead_letter.resolved"]),
        ("c", 1, ["action.failed"]),
    ]:
        story = [
            str(r["kind"])
            for r in records(tmp_path)
            if r.get("event_id") == event_id and r.get("action_index", index) == index
        ]
        after = story[story.index("action.dead_lettered") + 1 :]
        assert after == ["dead_letter.retried", "action.attempt", *ending], (event_id, story)


# --- 6. actions in flight across a reload ---


RELOAD_BEFORE = """\
automations:
  - name: changed
    on: [job_done]
    actions:
      - webhook:
          url: "{url}/old"
          payload: {{rules: old, id: "{{id}}"}}
          headers: {{X-Rules: old}}
          timeout: 60s
          retry: {{attempts: 3, initial: 10ms, max: 10ms}}
  - name: removed
    on: [job_done]
    actions:
      - webhook:
          url: "{url}/removed"
          payload: {{rules: old, id: "{{id}}"}}
          timeout: 60s
          retry: {{attempts: 3, initial: 10ms, max: 10ms}}
"""

RELOAD_AFTER = """\
automations:
  - name: changed
    on: [job_done]
    actions:
      - webhook:
          url: "{url}/new"
          payload: {{rules: new, id: "{{id}}"}}
          headers: {{X-Rules: new}}
          retry: {{attempts: 1}}
"""


async def test_actions_in_flight_finish_under_the_rules_they_started_with(
    tmp_path: Path,
) -> None:
    """Two actions are in flight (their first attempt held by the destination) when a reload
    changes one automation (URL, payload, headers, retry policy) and removes the other. Both
    first attempts then fail with 503: each is retried under its old rules (3 attempts, not
    the new rules' 1), to its old URL with its old payload and headers, and succeeds; an
    event after the reload uses the new rules only."""
    async with scripted() as dest:
        held = asyncio.Event()
        dest.script["/old"] = [(503, {}, held)]
        dest.script["/removed"] = [(503, {}, held)]
        rules = tmp_path / "rules.yaml"
        rules.write_text(HEAD + RELOAD_BEFORE.format(url=dest.url))
        async with daemon(rules) as proc:
            assert (await proc.post({"type": "job_done", "id": "before"}))[0] == 202
            await dest.wait_for("/old", 1)
            await dest.wait_for("/removed", 1)

            rules.write_text(HEAD + RELOAD_AFTER.format(url=dest.url))
            status, answer = await http_json("POST", f"{proc.url}/reload")
            assert status == 200, answer
            assert isinstance(answer, dict)
            assert answer["outcome"] == "applied"
            assert (await proc.post({"type": "job_done", "id": "after"}))[0] == 202
            (new,) = await dest.wait_for("/new", 1)
            held.set()  # the first attempts now fail, while the new rules are in force

            await recorded(tmp_path, 3, *OUTCOMES)
            assert await proc.stop() == 0
    assert new.body == {"rules": "new", "id": "after"}
    assert new.headers["X-Rules"] == "new"
    old = dest.on("/old")
    removed = dest.on("/removed")
    assert [(h.body, h.headers["X-Rules"]) for h in old] == [
        ({"rules": "old", "id": "before"}, "old")
    ] * 2
    assert [h.body for h in removed] == [{"rules": "old", "id": "before"}] * 2
    assert len({h.headers["Idempotency-Key"] for h in old}) == 1
    assert [h.path for h in dest.hits].count("/new") == 1  # only the event after the reload

    applied = [r for r in records(tmp_path, "config.applied") if r.get("automations_changed")]
    assert [(r["automations_changed"], r["automations_removed"]) for r in applied] == [
        (["changed"], ["removed"])
    ]
    outcomes = {
        (str(r["event_id"]), str(r["automation"])): (r["kind"], r["attempts"])
        for r in records(tmp_path, *OUTCOMES)
    }
    assert outcomes == {
        ("before", "changed"): ("action.succeeded", 2),
        ("before", "removed"): ("action.succeeded", 2),
        ("after", "changed"): ("action.succeeded", 1),
    }
    # the retries of the old actions came after the new rules were applied
    trail = records(tmp_path)
    reloaded_at = trail.index(applied[0])
    second_attempts = [
        i
        for i, r in enumerate(trail)
        if r["kind"] == "action.attempt" and r["event_id"] == "before" and r["attempt"] == 2
    ]
    assert len(second_attempts) == 2
    assert all(i > reloaded_at for i in second_attempts)
