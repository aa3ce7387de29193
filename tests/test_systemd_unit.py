"""The shipped unit file: verified and scored by systemd-analyze when it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from automationd.connections import connection_cap
from automationd.rules import DEFAULT_SERVER

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "automationd.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
INSTALLED = "/opt/automationd/bin/automationd"
"""Where the README's install recipe puts the command (a virtual environment in /opt)."""


@needs_analyze
def test_the_unit_scores_at_most_1_5() -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for automationd\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.5


@needs_analyze
def test_the_unit_verifies_cleanly(tmp_path: Path) -> None:
    """`systemd-analyze verify` also checks that ExecStart= exists: point it at this
    environment's automationd instead of the one the README installs in /opt/automationd."""
    assert ANALYZE is not None
    installed = Path(sys.executable).parent / "automationd"
    assert installed.exists()
    unit = tmp_path / "automationd.service"
    text = UNIT.read_text()
    assert INSTALLED in text
    unit.write_text(text.replace(INSTALLED, str(installed)))
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_the_unit_runs_the_command_the_readme_installs() -> None:
    """ExecStartPre= (the check) and ExecStart= name the virtual environment's command."""
    commands = re.findall(r"^ExecStart(?:Pre)?=(\S+)", UNIT.read_text(), re.M)
    assert commands == [INSTALLED, INSTALLED]


def test_the_unit_is_what_the_daemon_expects() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "DynamicUser=yes",
        "StateDirectory=automationd",
        "LogsDirectory=automationd",
        "ConfigurationDirectory=automationd",
        "LoadCredential=",
        "ProtectSystem=strict",
        "Restart=on-failure",
    ):
        assert line in text, line


def test_the_unit_leaves_room_for_max_connections() -> None:
    """LimitNOFILE= keeps the default max_connections (1000) from being lowered at start."""
    match = re.search(r"^LimitNOFILE=(\d+)$", UNIT.read_text(), re.M)
    assert match, "LimitNOFILE= is not set"
    limit = int(match.group(1))
    wanted = DEFAULT_SERVER.max_connections
    assert connection_cap(wanted, limit) == wanted
