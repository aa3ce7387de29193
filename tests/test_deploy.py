"""The README's install and upgrade recipes, run as written: a virtual environment made with
`python3 -m venv`, automationd installed into it from a copy of this checkout, the unit that
runs it, and an upgrade over it that keeps the daemon's state."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.recipes import ROOT, runnable, sh_block
from tests.support import LISTENING, receiver, write_rules

INSTALL = sh_block("python3 -m venv /opt/automationd")
UPGRADE = sh_block("systemctl restart automationd")
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.timeout(300)


def copy_checkout(target: Path) -> Path:
    """What a checkout holds for building and installing (no caches, no build folders)."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "rules.example.yaml"):
        shutil.copy2(ROOT / name, target / name)
    for name in ("automationd", "systemd", "schema"):
        shutil.copytree(
            ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return target


def set_version(checkout: Path, version: str) -> None:
    """Give the copy another version, as a newer release of it would have."""
    for path, pattern, line in (
        (checkout / "pyproject.toml", r'^version = ".*"$', f'version = "{version}"'),
        (
            checkout / "automationd/__init__.py",
            r'^__version__ = ".*"$',
            f'__version__ = "{version}"',
        ),
    ):
        text, count = re.subn(pattern, line, path.read_text(), flags=re.M)
        assert count == 1, path
        path.write_text(text)


def run_recipe(script: str, cwd: Path) -> str:
    """Run a recipe with bash in `cwd`; its output (it must succeed)."""
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    assert result.returncode == 0, script + result.stdout + result.stderr
    return result.stdout


@asynccontextmanager
async def installed_daemon(command: Path, rules: Path, state: Path) -> AsyncIterator[str]:
    """The installed command's daemon, with systemd's STATE_DIRECTORY; its URL."""
    process = await asyncio.create_subprocess_exec(
        str(command),
        "run",
        "--config",
        str(rules),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "STATE_DIRECTORY": str(state)},
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        url = ""
        async with asyncio.timeout(30):
            while not url:
                line = (await process.stderr.readline()).decode()
                assert line, "the daemon exited:\n" + "".join(log)
                log.append(line)
                if match := LISTENING.search(line):
                    url = match.group(1)
        drain = asyncio.create_task(process.stderr.read())
        yield url
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 40) == 0
        await drain
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def post(url: str, event: dict[str, object]) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/events", json=event) as response,
    ):
        assert response.status == 202
        answer = await response.json()
        assert isinstance(answer, dict)
        return answer


async def test_install_then_upgrade_as_the_readme_says(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "checkout")
    root = tmp_path / "root"  # stands for /: /opt, /etc and /var go in here
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/logrotate.d").mkdir()
    old = "0.0.1"
    set_version(checkout, old)

    out = await asyncio.to_thread(run_recipe, runnable(INSTALL, root), checkout)

    assert f"automationd {old}\n" in out  # --version, from the new environment
    command = root / "opt/automationd/bin/automationd"
    assert command.is_file()
    assert (root / "etc/automationd/rules.yaml").read_bytes() == (
        checkout / "rules.example.yaml"
    ).read_bytes()
    assert (root / "etc/logrotate.d/automationd").is_file()
    unit = root / "etc/systemd/system/automationd.service"
    assert (
        re.findall(r"^ExecStart(?:Pre)?=(\S+)", unit.read_text(), re.M)
        == ["/opt/automationd/bin/automationd"] * 2
    )
    if ANALYZE is not None:  # the unit starts exactly what the recipe installed
        moved = tmp_path / "automationd.service"
        moved.write_text(
            unit.read_text().replace("/opt/automationd", str(root / "opt/automationd"))
        )
        verify = await asyncio.to_thread(
            subprocess.run,
            [ANALYZE, "verify", str(moved)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0, verify.stderr
        assert verify.stderr.strip() == "", verify.stderr

    # the old version takes an event, and stops as systemctl restart stops it
    state = root / "var/lib/automationd"
    state.mkdir(parents=True)
    async with receiver() as recv:
        rules = write_rules(
            tmp_path,
            "automations:\n"
            "  - {name: forward, on: [job_done], actions: [{webhook: {url: "
            f'"{recv.url}/hook"}}}}]}}\n',
        )
        async with installed_daemon(command, rules, state) as url:
            assert (await post(url, {"type": "job_done", "id": "before-upgrade"}))["accepted"]
            await recv.wait_for(1)

        new = "0.0.2"
        set_version(checkout, new)
        out = await asyncio.to_thread(run_recipe, runnable(UPGRADE, root), checkout)
        assert f"automationd {new}\n" in out

        async with installed_daemon(command, rules, state) as url:
            answer = await post(url, {"type": "job_done", "id": "before-upgrade"})
            assert answer.get("duplicate") is True  # the ids seen are kept
            assert (await post(url, {"type": "job_done", "id": "after-upgrade"}))["accepted"]
            await recv.wait_for(2)
        delivered = [r.body for r in recv.requests if r.path == "/hook"]
        assert [b["id"] for b in delivered if isinstance(b, dict)] == [
            "before-upgrade",
            "after-upgrade",
        ]
    assert (state / "state.db").is_file()
    assert (state / "audit.jsonl").is_file()
