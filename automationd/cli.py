"""The `automationd` command: run the daemon, check rules files, receive webhooks for trying out."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from automationd import __version__, client, daemon, receive, trail, yamldoc
from automationd import backup as state_backup
from automationd.durations import parse_duration
from automationd.engine import Engine, utc_now
from automationd.events import EventError
from automationd.explain import as_text, explain
from automationd.rules import Config
from automationd.rules.load import ConfigError, load_config, state_base
from automationd.rules.schema import schema
from automationd.wire import parse_json, split_batch

log = logging.getLogger("automationd")


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] = os.environ) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser(environ).parse_args(argv)
    if args.command == "check":
        return check_files(args.paths, environ, secrets=args.secrets)
    if args.command == "schema":
        print(json.dumps(schema(), indent=2))
        return 0
    if args.command == "send":
        return send_event(args)
    if args.command == "dead-letters":
        return manage_dead_letters(args)
    if args.command == "test":
        return test_rules(args, environ)
    if args.command == "audit":
        return search_audit(args, environ)
    if args.command == "backup":
        return backup_state(args, environ)
    daemon.configure_logging(getattr(args, "log_level", "info"))
    if args.command == "receive":
        host, port = args.listen
        return asyncio.run(receive_webhooks(host, port, args.status))
    return run_daemon(args, environ)


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Every command and its options; defaults that come from the environment read `environ`."""
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

    return parser


def run_daemon(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """`automationd run`: load the rules, refusing to start on any problem (each logged with
    its location), then serve them until stopped (daemon.py)."""
    try:
        config = load_config(args.config, environ=environ)
    except ConfigError as exc:
        for line in exc.lines():
            log.error("%s", line)
        log.error("not starting: %s has %d problem(s)", args.config, len(exc.problems))
        return 1
    return asyncio.run(daemon.serve(config, environ))


async def receive_webhooks(host: str, port: int, status: int | None) -> int:
    """`automationd receive`: print each request and answer it as the service it stands in
    for would (receive.py), or with `status`, until Ctrl-C."""
    app = receive.create_app(status)
    return await daemon.serve_until_stopped(app, host, port, "receiving webhooks (Ctrl-C to stop);")


def _config_option(parser: argparse.ArgumentParser, environ: Mapping[str, str], what: str) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(environ.get("AUTOMATIOND_CONFIG", "rules.yaml")),
        help=f"{what} (default: $AUTOMATIOND_CONFIG, else ./rules.yaml)",
    )


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
        return state_base(args.config, environ) / str(name)
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


def manage_dead_letters(args: argparse.Namespace) -> int:
    """`automationd dead-letters list|retry|drop` against the running daemon; 0 when every
    request succeeded, 1 otherwise, 2 for a command that cannot be sent."""
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
    return asyncio.run(
        client.dead_letters(
            client.Daemon(args.url, args.token),
            args.letters,
            getattr(args, "ids", []),
            selected,
            as_json=getattr(args, "json", False),
            name=name,
        )
    )


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
    return asyncio.run(client.post_events(client.Daemon(args.url, args.token), body))


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
