"""The `automationd` command: run the daemon, check rules files, receive webhooks for trying out."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import ssl
import sys
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from automationd import __version__, client, trail, yamldoc
from automationd import backup as state_backup
from automationd.config import DEFAULT_SERVER, Config, ConfigError, load_config, schema
from automationd.connections import (
    BACKLOG,
    Gate,
    connection_cap,
    raise_open_file_limit,
    throttle_accept_errors,
)
from automationd.durations import parse_duration
from automationd.engine import Engine, utc_now
from automationd.events import EventError, format_timestamp, parse_json, split_batch
from automationd.explain import as_text, explain
from automationd.metrics import Metrics
from automationd.server import create_app
from automationd.state import StateError
from automationd.systemd import Notifier
from automationd.watch import start_watching

log = logging.getLogger("automationd")


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] = os.environ) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="automationd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"automationd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    _config_option(run, environ, "rules file")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = commands.add_parser("check", help="validate rules files and report every problem")
    check.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    check.add_argument(
        "--secrets",
        action="store_true",
        help="also resolve every secret (environment, files, $CREDENTIALS_DIRECTORY) and "
        "check its shape, as the daemon does at load; without it, no secret is read",
    )

    receive = commands.add_parser(
        "receive", help="print the webhooks sent to a local port (for trying rules out)"
    )
    receive.add_argument(
        "--listen",
        type=_host_port,
        default="127.0.0.1:8788",
        help="host:port (default %(default)s)",
    )
    receive.add_argument(
        "--status",
        type=int,
        help="answer every request with this status (e.g. 500 to try retries); by default "
        "each gets the success its service answers (Slack 200 ok, Teams 202, Twilio 201, ...)",
    )

    send = commands.add_parser(
        "send",
        help="post an event to a running daemon: automationd send TYPE key=value key:=json ...",
        description="Post an event to a running daemon. As in HTTPie, key=value is always "
        "text (version=1.10 and flow_run_id=123 stay strings) and key:=json is raw JSON: "
        'count:=3, ok:=true, tags:=\'["a", "b"]\', labels:=\'{"env": "prod"}\'.',
    )
    send.add_argument("type", nargs="?", help="the event type (not with --file)")
    send.add_argument(
        "fields",
        nargs="*",
        metavar="key=value|key:=json",
        help="key=value is always text; key:=json is raw JSON (number, true, false, null, "
        "list, object)",
    )
    send.add_argument("--file", type=Path, help="a JSON body (an event or an array); - for stdin")
    _daemon_options(send, environ)

    commands.add_parser("schema", help="print the JSON Schema of rules files")

    letters = commands.add_parser(
        "dead-letters", help="list, retry or drop the running daemon's dead letters"
    )
    letter_commands = letters.add_subparsers(dest="letters", required=True, metavar="ACTION")
    listing = letter_commands.add_parser("list", help="the dead letters, oldest first")
    listing.add_argument("--json", action="store_true", help="JSON Lines instead of a table")
    retry = letter_commands.add_parser("retry", help="run dead letters' actions again")
    retry.add_argument("ids", type=int, nargs="+", metavar="ID")
    drop = letter_commands.add_parser(
        "drop", help="forget dead letters: by id, by filter, or --all"
    )
    drop.add_argument("ids", type=int, nargs="*", metavar="ID")
    drop.add_argument("--all", action="store_true", help="every dead letter (with no filter)")
    for command in (listing, retry, drop):
        _daemon_options(command, environ)
    for command in (listing, drop):
        command.add_argument("--automation", help="only automations matching this glob")
        command.add_argument("--action", help="only this action kind (webhook, slack, ...)")
        command.add_argument("--before", help="only those that failed before this RFC 3339 time")

    audit = commands.add_parser("audit", help="search the audit trail, or follow it")
    _config_option(audit, environ, "rules file naming the trail")
    audit.add_argument("--file", type=Path, help="the trail itself, instead of --config")
    audit.add_argument(
        "--event",
        metavar="ID",
        help="one event's whole story: its id, or a unique prefix of it "
        f"(at least {trail.MIN_PREFIX} characters)",
    )
    audit.add_argument("--automation", help="records of one automation")
    audit.add_argument("--kind", help="a kind (action.failed) or a family (action)")
    audit.add_argument("--since", help="only the last DURATION (e.g. 15m, 1h, 2d)")
    audit.add_argument("--failed", action="store_true", help="failures only")
    audit.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    audit.add_argument("--json", action="store_true", help="JSON Lines instead of a table")

    backup = commands.add_parser(
        "backup", help="copy the live state database and journal (while the daemon runs)"
    )
    _config_option(backup, environ, "rules file naming the state database")
    backup.add_argument("--state", type=Path, help="the state database itself, instead of --config")
    backup.add_argument("destination", type=Path, metavar="DEST", help="a new folder")

    test = commands.add_parser(
        "test",
        help="what the rules would do with an event (nothing is sent; secrets are not needed, "
        "they are shown masked)",
    )
    test.add_argument("rules", type=Path, metavar="RULES")
    test.add_argument(
        "event", metavar="EVENT.json", help="a JSON event or array of them; - for stdin"
    )
    test.add_argument("--json", action="store_true", help="machine-readable output")
    test.add_argument(
        "--send",
        metavar="AUTOMATION",
        help="also run this automation's actions for real, once, for the (first) event; "
        "this needs every secret's value, as the daemon does",
    )

    args = parser.parse_args(argv)
    if args.command == "check":
        return check_files(args.paths, environ, secrets=args.secrets)
    if args.command == "schema":
        print(json.dumps(schema(), indent=2))
        return 0
    if args.command == "send":
        return send_event(args)
    if args.command == "dead-letters":
        return asyncio.run(manage_dead_letters(args))
    if args.command == "test":
        return test_rules(args, environ)
    if args.command == "audit":
        return search_audit(args, environ)
    if args.command == "backup":
        return backup_state(args, environ)
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.server").addFilter(_one_line_for_malformed_requests)
    if args.command == "receive":
        host, port = args.listen
        return asyncio.run(receive_webhooks(host, port, args.status))
    try:
        config = load_config(args.config, environ=environ)
    except ConfigError as exc:
        for line in exc.lines():
            log.error("%s", line)
        log.error("not starting: %s has %d problem(s)", args.config, len(exc.problems))
        return 1
    return asyncio.run(serve(config, environ))


def _config_option(parser: argparse.ArgumentParser, environ: Mapping[str, str], what: str) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(environ.get("AUTOMATIOND_CONFIG", "rules.yaml")),
        help=f"{what} (default: $AUTOMATIOND_CONFIG, else ./rules.yaml)",
    )


def _one_line_for_malformed_requests(record: logging.LogRecord) -> bool:
    """aiohttp logs a traceback at ERROR for every malformed HTTP request it refuses with 400;
    any client could fill the journal with them. One warning line each instead."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, HttpProcessingError):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args, record.exc_info = (
            "refused a malformed HTTP request: %s",
            (error.message.splitlines()[0] if error.message else type(error).__name__,),
            None,
        )
    return True


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port (e.g. 127.0.0.1:8788)")
    return host.strip("[]"), int(port)


def _trail_path(args: argparse.Namespace, environ: Mapping[str, str]) -> Path | None:
    """The audit file: --file, else the one the rules name (read without their secrets)."""
    if args.file is not None:
        return Path(args.file)
    try:
        config = load_config(args.config, environ=environ)
    except ConfigError:
        try:
            doc = yamldoc.load(args.config.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, yamldoc.YamlError) as exc:
            print(f"automationd audit: cannot read {args.config}: {exc}", file=sys.stderr)
            return None
        audit = doc.data.get("audit") if isinstance(doc.data, dict) else None
        name = audit.get("path", "audit.jsonl") if isinstance(audit, dict) else "audit.jsonl"
        state = environ.get("STATE_DIRECTORY", "").split(":", 1)[0]
        return (Path(state) if state else args.config.parent) / str(name)
    return config.audit.path


def search_audit(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """`automationd audit`: filter the trail (and its rotated files), print, maybe follow.

    `--event` takes an id or a unique prefix of one (at least `trail.MIN_PREFIX`
    characters); an ambiguous prefix lists the events it matches and exits 1, as does an
    id the trail does not hold (unless following: that event may be yet to come)."""
    path = _trail_path(args, environ)
    if path is None:
        return 1
    try:
        start = trail.since(parse_duration(args.since)) if args.since else None
    except ValueError as exc:
        print(f"automationd audit: --since: {exc}", file=sys.stderr)
        return 2
    if not trail.trail_files(path) and not args.follow:
        print(f"automationd audit: no audit trail at {path}", file=sys.stderr)
        return 1
    event = args.event
    if event is not None:
        found = trail.find_events(path, event)
        shown = 20  # a short prefix of time-ordered ids can match weeks of events
        if len(found) > 1:
            print(
                f"automationd audit: --event {event} matches {len(found)} events; "
                "give more of the id:",
                file=sys.stderr,
            )
            for candidate in found[:shown]:
                line = f"  {candidate.event_id}  {candidate.time}  {candidate.type}"
                print(line.rstrip(), file=sys.stderr)
            if len(found) > shown:
                print(f"  ... and {len(found) - shown} more", file=sys.stderr)
            return 1
        if found:
            event = found[0].event_id
        elif not args.follow:  # following, the event may be yet to come (by its whole id)
            if len(event) < trail.MIN_PREFIX:
                print(
                    f"automationd audit: no event with the id {event} in {path} "
                    f"(an id prefix needs at least {trail.MIN_PREFIX} characters)",
                    file=sys.stderr,
                )
            else:
                print(
                    f"automationd audit: no event whose id is or starts with {event} in {path}",
                    file=sys.stderr,
                )
            return 1
    keep = trail.Filter(event, args.automation, args.kind, start, args.failed)
    show = (lambda r: json.dumps(r, ensure_ascii=False)) if args.json else trail.as_row
    try:
        # when following, the live file is read by follow() itself, from its first byte: no
        # record written between reading and following can slip through
        for record in trail.read(path, keep, live=not args.follow):
            print(show(record), flush=False)
        sys.stdout.flush()
        if args.follow:
            for record in trail.follow(path, keep, stop=lambda: False):
                print(show(record), flush=True)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # e.g. | head
        return 0
    return 0


def backup_state(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """`automationd backup DEST`: a consistent copy of the state database and the journal's
    segments, taken with SQLite's online backup while the daemon runs."""
    database = args.state
    if database is None:
        try:
            config = load_config(args.config, environ=environ, resolve_secrets=False)
            database = config.state.path
        except ConfigError as exc:
            for line in exc.lines():
                print(line, file=sys.stderr)
            print("automationd backup: name the database with --state instead", file=sys.stderr)
            return 1
    try:
        summary = state_backup.backup(Path(database), args.destination)
    except state_backup.BackupError as exc:
        print(f"automationd backup: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def test_rules(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """`automationd test RULES EVENT.json`: explain every automation for each event.

    Nothing is sent, so no secret is read (each is shown masked) and the rules can be tried
    on any machine; `--send` sends for real and needs them all, as the daemon does."""
    try:
        config = load_config(args.rules, environ=environ, resolve_secrets=False)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 1
    if args.send:
        try:  # sound without its secrets: what fails now is a secret
            config = load_config(args.rules, environ=environ)
        except ConfigError as exc:
            for line in exc.lines():
                print(line, file=sys.stderr)
            print(
                "automationd test --send sends for real: it needs the value of every secret, "
                "as the daemon does (without --send, secrets are shown masked)",
                file=sys.stderr,
            )
            return 1
    try:
        body = sys.stdin.buffer.read() if args.event == "-" else Path(args.event).read_bytes()
    except OSError as exc:
        print(f"automationd test: cannot read {args.event}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        events, _ = split_batch(parse_json(body))
        now = utc_now()
        answers = [explain(config, raw, now) for raw in events]
    except EventError as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"{args.event}: {exc.message}{where}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answers, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(as_text(answer) for answer in answers))
    if args.send:
        return asyncio.run(_send_test(config, args.send, answers[0]["event"], environ))
    return 0


async def _send_test(config: Config, name: str, event: object, environ: Mapping[str, str]) -> int:
    automation = next((a for a in config.automations if a.name == name), None)
    if automation is None or not isinstance(event, dict):
        print(f"automationd test: no automation named {name!r}", file=sys.stderr)
        return 1
    engine = Engine(config, environ=environ)
    engine.audit.open()
    try:
        ok = await engine.send_test(automation, event)
    finally:
        engine.audit.close()
    outcome = "every action succeeded" if ok else "an action failed"
    print(f"sent {name}: {outcome} (see {config.audit.path})")
    return 0 if ok else 1


def _daemon_options(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """--url and --token of a command that talks to the running daemon."""
    parser.add_argument(
        "--url",
        default=environ.get("AUTOMATIOND_URL", "http://127.0.0.1:8787"),
        help="the daemon (default: $AUTOMATIOND_URL, else %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=environ.get("AUTOMATIOND_TOKEN"),
        help="bearer token (default: $AUTOMATIOND_TOKEN)",
    )


async def manage_dead_letters(args: argparse.Namespace) -> int:
    """`automationd dead-letters list|retry|drop` against the running daemon; 0 when every
    request succeeded, 1 otherwise, 2 for a command that cannot be sent."""
    daemon = client.Daemon(args.url, args.token)
    name = f"automationd dead-letters {args.letters}"
    selected = {
        key: value
        for key in ("automation", "action", "before")
        if (value := getattr(args, key, None)) is not None
    }
    if args.letters == "drop" and sum((bool(args.ids), bool(selected), args.all)) != 1:
        print(
            f"{name}: give one of: IDs, a filter (--automation, --action, --before), --all",
            file=sys.stderr,
        )
        return 2
    try:
        async with aiohttp.ClientSession() as session:
            if args.letters == "list":
                return await _list_letters(daemon, session, selected, args.json, name)
            if args.letters == "drop" and not args.ids:
                params = selected if selected else {"all": "true"}
                answer = await daemon.call(session, "DELETE", "/dead-letters", params)
                if answer.status != 200 or not isinstance(answer.body, dict):
                    print(f"{name}: {answer.error()}", file=sys.stderr)
                    return 1
                print(f"dropped {answer.body['dropped']}")
                return 0
            failed = 0
            for letter in args.ids:
                if args.letters == "retry":
                    answer = await daemon.call(session, "POST", f"/dead-letters/{letter}/retry")
                    done = answer.status == 202
                else:
                    answer = await daemon.call(session, "DELETE", f"/dead-letters/{letter}")
                    done = answer.status == 200
                if done:
                    print(f"{'retrying' if args.letters == 'retry' else 'dropped'} {letter}")
                else:
                    failed += 1
                    print(f"{name}: {letter}: {answer.error()}", file=sys.stderr)
            return 1 if failed else 0
    except client.Unreachable as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


async def _list_letters(
    daemon: client.Daemon,
    session: aiohttp.ClientSession,
    selected: dict[str, str],
    as_json: bool,
    name: str,
) -> int:
    """Print every selected dead letter, a page at a time."""
    after = "0"
    shown = 0
    while True:
        answer = await daemon.call(session, "GET", "/dead-letters", {**selected, "after": after})
        if answer.status != 200 or not isinstance(answer.body, dict):
            print(f"{name}: {answer.error()}", file=sys.stderr)
            return 1
        for letter in answer.body["dead_letters"]:
            shown += 1
            if as_json:
                print(json.dumps(letter, ensure_ascii=False))
                continue
            print(
                f"{letter['id']:>6}  {letter['failed_at']}  {letter['automation']} "
                f"#{letter['action_index']} {letter['action']}  "
                f"{letter['attempts']} attempt(s), {letter['runs']} run(s)  {letter['error']}"
            )
        if "next_after" not in answer.body:
            break
        after = str(answer.body["next_after"])
    if not as_json:
        print(f"{shown} dead letter{'s' if shown != 1 else ''}")
    return 0


def send_event(args: argparse.Namespace) -> int:
    """`automationd send`: build the event, POST it, print the answer; 0 on 202."""

    def not_json(constant: str) -> object:
        raise ValueError(f"{constant} is not a JSON number")  # the daemon refuses it too

    if args.file is not None:
        if args.type or args.fields:
            print(
                "automationd send: give either --file or TYPE key=value ..., not both",
                file=sys.stderr,
            )
            return 2
        try:
            body = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
        except OSError as exc:
            print(f"automationd send: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 1
    else:
        if not args.type:
            print("automationd send: an event type is needed (or --file)", file=sys.stderr)
            return 2
        event: dict[str, object] = {"type": args.type}
        for field in args.fields:
            # HTTPie's convention: `key=value` is always text, `key:=json` raw JSON
            key, sep, raw = field.partition("=")
            is_json = key.endswith(":")
            key = key.removesuffix(":")
            if not sep or not key:
                print(
                    f"automationd send: {field!r} is not key=value or key:=json",
                    file=sys.stderr,
                )
                return 2
            if not is_json:
                event[key] = raw
                continue
            try:
                event[key] = json.loads(raw, parse_constant=not_json)
            except ValueError as exc:
                print(
                    f"automationd send: {field!r}: the value of {key!r} is not JSON ({exc}); "
                    f"use {key}=... for text",
                    file=sys.stderr,
                )
                return 2
        body = json.dumps(event).encode()
    return asyncio.run(_post_events(client.Daemon(args.url, args.token), body))


async def _post_events(daemon: client.Daemon, body: bytes) -> int:
    try:
        async with aiohttp.ClientSession() as session:
            answer = await daemon.call(session, "POST", "/events", body=body)
    except client.Unreachable as exc:
        print(f"automationd send: {exc}", file=sys.stderr)
        return 1
    print(answer.text)
    if answer.status != 202:
        print(f"automationd send: the daemon answered {answer.status}", file=sys.stderr)
        return 1
    return 0


def check_files(paths: Sequence[Path], environ: Mapping[str, str], *, secrets: bool = False) -> int:
    """`automationd check`: every problem of every file, one `file:line:column` line each.

    Without `secrets` no secret is read: the file's structure passes on a build or CI
    machine that has none. With it (`--secrets`, where the daemon runs) each must resolve
    and have its shape (a webhook secret is an http(s) URL), as the daemon checks at load."""
    status = 0
    for path in paths:
        try:
            config = load_config(path, environ=environ, resolve_secrets=secrets)
        except ConfigError as exc:
            for line in exc.lines():
                print(line)
            print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
            status = 1
        else:
            count = len(config.automations)
            summary = f"{count} automation{'s' if count != 1 else ''}"
            if config.secrets:
                plural = "s" if len(config.secrets) != 1 else ""
                summary += f"; {len(config.secrets)} secret{plural} " + (
                    "resolved" if secrets else "not resolved, --secrets resolves them"
                )
            print(f"{path}: OK ({summary})")
    return status


async def serve(config: Config, environ: Mapping[str, str]) -> int:
    """Run the daemon until SIGTERM or SIGINT, then stop gracefully.

    Reloads on SIGHUP, POST /reload and every save of the rules file; tells systemd when it
    is ready, reloading and stopping, and pings its watchdog from the event loop."""
    server = config.server
    open_files = raise_open_file_limit()
    max_connections = connection_cap(server.max_connections, open_files)
    if max_connections < server.max_connections:
        log.warning(
            "max_connections lowered from %d to %d: the open-file limit is %s",
            server.max_connections,
            max_connections,
            open_files,
        )
    throttle_accept_errors(asyncio.get_running_loop())
    notifier = Notifier(environ)
    engine = Engine(config, environ=environ, notifier=notifier)
    runner = web.AppRunner(
        create_app(engine),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=server.idle_timeout,
    )
    try:
        await runner.setup()
    except (OSError, StateError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    stop = _stop_on_signals()
    loop = asyncio.get_running_loop()
    watcher = await start_watching(
        config.source,
        lambda: engine.reload("watch", force=False),
        stop,
        settle=lambda: engine.config.reload.settle,
    )
    try:
        tls = _tls_context(server.tls)
    except (OSError, ssl.SSLError) as exc:
        log.error("cannot start: TLS certificate or key: %s", exc)
        await runner.cleanup()
        return 1
    reloads: set[asyncio.Task[object]] = set()

    def reload_on_sighup() -> None:
        task = loop.create_task(engine.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    # before "listening" and READY=1: a SIGHUP sent as soon as either is seen must reload,
    # not meet the default action, which ends the process
    loop.add_signal_handler(signal.SIGHUP, reload_on_sighup)
    listener = await _bind(
        runner,
        server.host,
        server.port,
        f"automationd {__version__}",
        tls,
        max_connections=max_connections,
        header_timeout=server.header_timeout,
        metrics=engine.metrics,
    )
    if listener is None:
        stop.set()
        await asyncio.gather(watcher, return_exceptions=True)
        return 1
    engine.listening = True
    notifier.ready(engine.status())
    background = [watcher, loop.create_task(notifier.watchdog())]
    await stop.wait()
    notifier.stopping()
    log.info("stopping: no new events; running actions get up to 30 s")
    loop.remove_signal_handler(signal.SIGHUP)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, *reloads, return_exceptions=True)
    listener.close()
    await runner.cleanup()
    notifier.close()
    log.info("stopped")
    return 0


def _tls_context(files: tuple[Path, Path] | None) -> ssl.SSLContext | None:
    """The server's TLS context from server.tls (certificate chain and key, PEM)."""
    if files is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files[0]), str(files[1]))
    return context


async def _bind(
    runner: web.AppRunner,
    host: str,
    port: int,
    name: str,
    tls: ssl.SSLContext | None = None,
    *,
    max_connections: int = DEFAULT_SERVER.max_connections,
    header_timeout: float = DEFAULT_SERVER.header_timeout,
    metrics: Metrics | None = None,
) -> asyncio.Server | None:
    """Listen for the runner's app and log the address; None (logged, cleaned up) when it
    cannot. Connections go through a Gate (connections.py): at most `max_connections` open,
    `header_timeout` seconds for each request's headers (and for the TLS handshake). Close
    the returned server before `runner.cleanup()`."""
    assert runner.server is not None, "runner.setup() comes first"
    gate = Gate(
        runner.server,
        max_connections=max_connections,
        header_timeout=header_timeout,
        tls=tls,  # the Gate upgrades admitted connections itself
        closed=metrics.connection_closed if metrics else lambda _reason: None,
    )
    if metrics is not None:
        metrics.connections_open.set_function(lambda: gate.open)
    loop = asyncio.get_running_loop()
    try:
        listener = await loop.create_server(gate, host, port, backlog=BACKLOG)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        await runner.cleanup()
        return None
    for sock in listener.sockets:
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info("%s listening on %s://%s:%d", name, "https" if tls else "http", shown, bound_port)
    return listener


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def receive_webhooks(host: str, port: int, status: int | None) -> int:
    """`automationd receive`: print each request as one JSON line, and answer it as the
    service it stands in for would, so that every HTTP action kind pointed at it succeeds:
    PagerDuty's `/v2/enqueue` 202, Twilio's `.../Messages.json` 201 with a message, Prefect's
    `set_state` 201 ACCEPT, `create_flow_run` 201 with a run (200 with the same run for a
    known idempotency key), `pause_deployment` 200, a Teams card (`"type": "message"`) 202,
    anything else (Slack, webhooks) 200 with the body `ok`, which is what Slack answers.
    With `status`, every request gets that status instead (to try failures)."""
    runs: dict[str, dict[str, object]] = {}  # flow runs "created", by idempotency key

    def as_service(path: str, body: object) -> web.Response:
        fields = body if isinstance(body, dict) else {}
        if path.endswith("/v2/enqueue"):
            dedup_key = fields.get("dedup_key")
            answer = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
            return web.json_response(answer, status=202)
        if twilio := re.search(r"/2010-04-01/Accounts/([^/]+)/Messages\.json$", path):
            message = {
                "sid": f"SM{uuid.uuid4().hex}",
                "account_sid": twilio.group(1),
                "messaging_service_sid": fields.get("MessagingServiceSid"),
                "to": fields.get("To"),
                "body": fields.get("Body"),
                "status": "accepted",
            }
            return web.json_response(message, status=201)
        if path.endswith("/set_state"):
            state = fields.get("state")
            accepted: dict[str, object] = {"status": "ACCEPT", "details": {}, "state": state}
            return web.json_response(accepted, status=201)
        if path.endswith("/pause_deployment"):
            return web.json_response(None)
        if deployment := re.search(r"/deployments/([^/]+)/create_flow_run$", path):
            key = str(fields.get("idempotency_key") or uuid.uuid4())
            if key in runs:
                return web.json_response(runs[key])
            runs[key] = {
                "id": str(uuid.uuid4()),
                "name": f"received-run-{len(runs) + 1}",
                "deployment_id": deployment.group(1),
                "parameters": fields.get("parameters", {}),
                "idempotency_key": key,
                "state": {"type": "SCHEDULED", "name": "Scheduled"},
            }
            return web.json_response(runs[key], status=201)
        if fields.get("type") == "message" and "attachments" in fields:
            return web.Response(status=202)  # a Teams Workflows webhook
        return web.Response(text="ok")

    def as_told(told: int) -> web.Response:
        if told < 200 or told in (204, 304):
            return web.Response(status=told)
        text = "ok" if told < 300 else f"automationd receive answers {told} (--status)"
        return web.Response(status=told, text=text)

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        body: object
        if request.content_type == "application/x-www-form-urlencoded":  # Twilio
            body = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        response = as_service(request.path, body) if status is None else as_told(status)
        record = {
            "time": format_timestamp(utc_now()),
            "method": request.method,
            "path": request.path_qs,
            "headers": {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in {"host", "content-length"}
            },
            "body": body,
            "answered": response.status,
        }
        print(json.dumps(record, ensure_ascii=False), flush=True)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    listener = await _bind(runner, host, port, "receiving webhooks (Ctrl-C to stop);")
    if listener is None:
        return 1
    await _stop_on_signals().wait()
    listener.close()
    await runner.cleanup()
    return 0
