"""The README's own walkthroughs, each run as written: the quick start, `automationd test`,
the dead-letters commands, the `automationd audit` commands and the `LoadCredential=` drop-in.

Each block is taken from README.md by the heading it sits under and the command it starts
with, so a change to a block that no longer works fails here. The commands run with bash in a
folder laid out as the checkout they are written for: `rules.example.yaml`, and
`.venv/bin/automationd` (made by the quick start itself, elsewhere a link to this
environment's command). Where a test changes a line, it says which and why."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.recipes import README, ROOT
from tests.support import LISTENING, daemon, interruptible, receiver, until

ANALYZE = shutil.which("systemd-analyze")
UNIT = ROOT / "systemd" / "automationd.service"
INSTALLED = "/opt/automationd/bin/automationd"


def readme_block(heading: str, language: str, starts: str, holds: str = "") -> str:
    """The one `language` block (dedented) under the README heading that begins with
    `heading` (down to the next heading of its level or above) whose text begins with
    `starts` and holds `holds`."""
    section: list[str] = []
    level = 0
    fenced = False
    for line in README.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (title := re.match(r"(#+) (.*)", line)):
            depth = len(title.group(1))
            if level and depth <= level:
                break
            if not level and title.group(2).startswith(heading):
                level = depth
                continue
        if level:
            section.append(line)
    assert level, f"no README heading starts with {heading!r}"
    blocks = [
        textwrap.dedent(body)
        for _, body in re.findall(
            rf"^( *)```{language}\n(.*?)^\1```", "".join(section), re.M | re.S
        )
    ]
    found = [b for b in blocks if b.startswith(starts) and holds in b]
    assert len(found) == 1, f"{len(found)} {language} blocks under {heading!r} start {starts!r}"
    return found[0]


QUICK_START = readme_block("Two commands", "sh", "python3 -m venv .venv")
TRY_A_RULE = readme_block(
    "Try a rule before it fires", "sh", "echo ", "automationd test rules.example.yaml -"
)
DEAD_LETTERS = readme_block("HTTP API", "sh", ".venv/bin/automationd dead-letters ")
AUDIT = readme_block("Audit trail", "sh", ".venv/bin/automationd audit ")
DROP_IN = readme_block("Secrets, and rotating one", "ini", "# systemctl edit automationd")
CREDENTIAL_SECRET = readme_block("Secrets, and rotating one", "yaml", "secrets:")


def lines(block: str) -> list[str]:
    """The commands of a block, continued lines joined."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def working_folder(path: Path, rules: str | None = None) -> Path:
    """A folder laid out as the checkout: `rules.example.yaml` (the bundled one, or `rules`)
    and `.venv/bin/automationd`, a link to this environment's command."""
    command = Path(sys.executable).parent / "automationd"
    assert command.exists(), command
    (path / ".venv/bin").mkdir(parents=True)
    (path / ".venv/bin/automationd").symlink_to(command)
    text = (ROOT / "rules.example.yaml").read_text() if rules is None else rules
    (path / "rules.example.yaml").write_text(text)
    return path


def example_rules(receiver_url: str) -> str:
    """The bundled example, listening on a port the kernel picks (8787 may be taken here)
    and sending its webhooks to the test's receiver instead of `automationd receive`."""
    example = (ROOT / "rules.example.yaml").read_text()
    assert '"127.0.0.1:8787"' in example
    assert "http://127.0.0.1:8788" in example
    return example.replace('"127.0.0.1:8787"', '"127.0.0.1:0"').replace(
        "http://127.0.0.1:8788", receiver_url
    )


async def sh(command: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`command` run by bash in `cwd`: its exit status, stdout and stderr."""
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(shell.communicate(), 30)
    assert shell.returncode is not None
    return shell.returncode, out.decode(), err.decode()


def tracked_files(target: Path) -> Path:
    """A copy of the files git tracks (as they are in the working tree), as a clone has."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file being deleted right now is not there
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def daemon_pid(shell: int) -> int:
    """The pid of the `automationd run` a bash started: bash's own (when it execs its last
    command) or that of its child."""
    for pid in [shell, *map(int, Path(f"/proc/{shell}/task/{shell}/children").read_text().split())]:
        if b"run\0--config" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("the shell runs no automationd run")


@pytest.mark.timeout(300)
async def test_the_quick_start_installs_and_runs_the_example(tmp_path: Path) -> None:
    """The block as written, in a copy of the checkout: a new .venv, `pip install -e .` (from
    the package index) and the daemon on rules.example.yaml until it listens; then SIGTERM to
    the daemon's pid. The copy's rules listen on a port the kernel picks: 8787 may be taken on
    the machine running the tests."""
    assert QUICK_START.count("\n") == 1, "the quick start is one command line"
    checkout = tracked_files(tmp_path / "checkout")
    rules = checkout / "rules.example.yaml"
    text = rules.read_text()
    assert '"127.0.0.1:8787"' in text
    rules.write_text(text.replace('"127.0.0.1:8787"', '"127.0.0.1:0"'))
    environ = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    with (tmp_path / "stdout").open("wb") as stdout:  # pip's output: too much for a pipe
        shell = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            QUICK_START,
            cwd=checkout,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
            env=environ,
            start_new_session=True,
        )
    assert shell.stderr is not None
    log: list[str] = []
    try:
        url = ""
        async with asyncio.timeout(240):
            while not url:
                line = (await shell.stderr.readline()).decode()
                assert line, "".join(log) + (tmp_path / "stdout").read_text()
                log.append(line)
                if match := LISTENING.search(line):
                    url = match.group(1)
        drain = asyncio.create_task(shell.stderr.read())
        assert (checkout / ".venv/bin/automationd").is_file()
        async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as ready:
            assert ready.status == 200, await ready.text()
        os.kill(daemon_pid(shell.pid), signal.SIGTERM)
        assert await asyncio.wait_for(shell.wait(), 40) == 0  # the daemon's own exit status
        log.append((await drain).decode())
    finally:
        if shell.returncode is None:
            os.killpg(shell.pid, signal.SIGKILL)
            await shell.wait()
    assert any("loaded rules.example.yaml: 3 automations" in line for line in log), log
    assert (checkout / "audit.jsonl").is_file()  # next to the rules, as the README says


async def test_trying_a_rule_prints_what_each_automation_would_do(tmp_path: Path) -> None:
    """`automationd test rules.example.yaml -` on the event the block pipes in."""
    folder = working_folder(tmp_path / "checkout")
    code, out, err = await sh(TRY_A_RULE, folder)
    assert code == 0, out + err
    assert "  + notify-on-failed-run: FIRES\n" in out
    assert "url: http://127.0.0.1:8788/alerts\n" in out
    assert '"state": "Failed"' in out
    assert '  - notify-on-late-run: no, type "flow_run_state_change" is not in on:' in out
    assert '  - record-production-deploys: no, type "flow_run_state_change" is not in on:' in out


async def test_the_dead_letters_commands_list_retry_and_drop(tmp_path: Path) -> None:
    """Each line of the block against a running daemon (AUTOMATIOND_URL) holding four dead
    letters: a webhook and a Slack message of `notify-on-failed-run` for runs `a` and `b`,
    their destinations answering 400. Changed lines: the ids 12 and 13 become those of the
    webhook letters of `a` and `b`."""
    (bare, full, retrying, dropping) = lines(DEAD_LETTERS)
    assert bare == ".venv/bin/automationd dead-letters list"
    assert full.startswith(".venv/bin/automationd dead-letters list --automation")
    assert re.search(r"\bretry 12 13\b", retrying)
    assert re.search(r"\bdrop 12\b", dropping)
    async with receiver() as recv:
        for path in ("/hook/a", "/hook/b", "/slack"):
            recv.status[path] = 400
        folder = working_folder(
            tmp_path,
            "version: 1\n"
            'server: {listen: "127.0.0.1:0"}\n'
            "secrets: {slack-ops: {env: SLACK_OPS_WEBHOOK}}\n"
            "automations:\n"
            "  - name: notify-on-failed-run\n"
            "    on: [flow_run_state_change]\n"
            "    actions:\n"
            f'      - webhook: {{url: "{recv.url}/hook/{{flow_run_name}}"}}\n'
            "      - slack: {webhook_url_secret: slack-ops}\n",
        )
        async with daemon(
            folder / "rules.example.yaml", env={"SLACK_OPS_WEBHOOK": f"{recv.url}/slack"}
        ) as proc:
            env = {"AUTOMATIOND_URL": proc.url}
            for run in ("a", "b"):
                event = {"type": "flow_run_state_change", "id": run, "flow_run_name": run}
                assert (await proc.post(event))[0] == 202

            async def letters() -> list[dict[str, object]]:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{proc.url}/dead-letters") as answer,
                ):
                    body = await answer.json()
                    assert isinstance(body, dict)
                    return list(body["dead_letters"])

            async def count(wanted: int) -> bool:
                return len(await letters()) == wanted

            await until(lambda: count(4), within=20)
            ids = {(d["event_id"], d["action"]): d["id"] for d in await letters()}

            code, out, err = await sh(bare, folder, env)
            assert code == 0, err
            assert out.count("notify-on-failed-run #0 webhook") == 2, out
            assert out.count("notify-on-failed-run #1 slack") == 2, out
            assert out.endswith("4 dead letters\n"), out
            code, out, err = await sh(full, folder, env)
            assert code == 0, err
            shown = [json.loads(line) for line in out.splitlines()]
            assert len(shown) == 2, out
            assert {d["id"] for d in shown} == {ids[run, "slack"] for run in ("a", "b")}

            a, b = ids["a", "webhook"], ids["b", "webhook"]

            def real_ids(line: str) -> str:
                return re.sub(r"\b13\b", str(b), re.sub(r"\b12\b", str(a), line))

            recv.status["/hook/b"] = 200  # b's webhook goes through now, a's still fails
            code, out, err = await sh(real_ids(retrying), folder, env)
            assert (code, out) == (0, f"retrying {a}\nretrying {b}\n"), err

            async def retried() -> bool:
                left = {d["id"]: d["runs"] for d in await letters()}
                return b not in left and left.get(a) == 2

            await until(retried, within=20)
            code, out, err = await sh(real_ids(dropping), folder, env)
            assert (code, out) == (0, f"dropped {a}\n"), err
            assert {d["id"] for d in await letters()} == {ids[run, "slack"] for run in ("a", "b")}
            assert await proc.stop() == 0


@asynccontextmanager
async def following(command: str, cwd: Path, env: dict[str, str]) -> AsyncIterator[list[str]]:
    """`command` (audit --follow) running under bash; the lines it printed so far. Stopped
    with SIGINT, as Ctrl-C stops it, on leaving."""
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
        start_new_session=True,
        preexec_fn=interruptible,
    )
    assert shell.stdout is not None
    printed: list[str] = []

    async def read(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            printed.append(line.decode())

    reading = asyncio.create_task(read(shell.stdout))
    try:
        yield printed
        os.killpg(shell.pid, signal.SIGINT)
        assert await asyncio.wait_for(shell.wait(), 10) == 0
        await reading
    finally:
        if shell.returncode is None:
            os.killpg(shell.pid, signal.SIGKILL)
            await shell.wait()
        reading.cancel()


async def test_the_audit_commands_tell_what_happened(tmp_path: Path) -> None:
    """Each line of the block on the trail the daemon wrote for the example rules, a run's
    webhook answered 400. Changed: the placeholder id `019ad3f2-c0a1` becomes as many
    characters of the real event's id. `--follow` runs until it prints a second event's
    records, then gets SIGINT."""
    by_event, failed, automation, follow = lines(AUDIT)
    placeholder = re.search(r"--event ([\w-]+)", by_event)
    assert placeholder, by_event
    assert "--config rules.example.yaml" in by_event
    assert "--follow" in follow
    async with receiver() as recv:
        recv.status["/alerts"] = 400
        folder = working_folder(tmp_path, example_rules(recv.url))
        env: dict[str, str] = {}
        async with daemon(folder / "rules.example.yaml") as proc:
            run = {"type": "flow_run_state_change", "flow_name": "nightly-etl", "state": "Failed"}
            status, answer = await proc.post(run)
            assert status == 202
            assert isinstance(answer, dict)
            (event_id,) = answer["accepted"]

            async def failed_yet() -> bool:
                trail = (folder / "audit.jsonl").read_text()
                return '"kind":"action.dead_lettered"' in trail

            await until(failed_yet, within=20)

            prefix = event_id[: len(placeholder.group(1))]
            code, out, err = await sh(by_event.replace(placeholder.group(1), prefix), folder, env)
            assert code == 0, err
            for kind in ("event.accepted", "automation.matched", "action.attempt"):
                assert kind in out, out
            assert "action.failed" in out, out

            code, out, err = await sh(failed, folder, env)
            assert code == 0, err
            assert "action.failed" in out, out
            assert "event.accepted" not in out, out

            code, out, err = await sh(automation, folder, env)
            assert code == 0, err
            records = [json.loads(line) for line in out.splitlines()]
            assert [r["kind"] for r in records] == [
                "action.attempt",
                "action.failed",
                "action.dead_lettered",
            ]
            assert {r["automation"] for r in records} == {"notify-on-failed-run"}
            assert records[1]["status"] == 400

            async with following(follow, folder, env) as printed:
                await until(lambda: _holds(printed, event_id), within=20)
                status, answer = await proc.post({**run, "flow_name": "weekly"})
                assert status == 202
                assert isinstance(answer, dict)
                (later,) = answer["accepted"]
                await until(lambda: _holds(printed, later), within=20)
            assert await proc.stop() == 0


async def _holds(printed: list[str], text: str) -> bool:
    return any(text in line for line in printed)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_credential_drop_in_verifies(tmp_path: Path) -> None:
    """The unit with the block as its `systemctl edit` drop-in (override.conf) passes
    `systemd-analyze verify`, which reads drop-ins beside the unit: a misspelt key in one
    fails it. The unit's ExecStart= points at this environment's command (verify checks it
    exists), as in tests/test_systemd_unit.py. The credential is the one the rules name."""
    assert ANALYZE is not None
    (credential,) = re.findall(r"^LoadCredential=([\w-]+):", DROP_IN, re.M)
    assert f"{{credential: {credential}}}" in CREDENTIAL_SECRET
    installed = Path(sys.executable).parent / "automationd"
    unit = tmp_path / "automationd.service"
    text = UNIT.read_text()
    assert INSTALLED in text
    unit.write_text(text.replace(INSTALLED, str(installed)))
    (tmp_path / "automationd.service.d").mkdir()
    drop_in = tmp_path / "automationd.service.d/override.conf"

    def verify(content: str) -> subprocess.CompletedProcess[str]:
        drop_in.write_text(content)
        return subprocess.run(
            [ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
        )

    misspelt = verify(DROP_IN.replace("LoadCredential=", "LoadCredentail="))
    assert "LoadCredentail" in misspelt.stderr, "verify did not read the drop-in"
    result = verify(DROP_IN)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
