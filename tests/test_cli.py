"""`automationd check` and friends, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from automationd.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "automationd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_check_a_good_file_exits_0(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nautomations:\n  - {name: a, on: [x], actions: [{webhook: {url: 'http://h/'}}]}\n"
    )
    result = run("check", str(rules))
    assert result.returncode == 0
    assert result.stdout == f"{rules}: OK (1 automation)\n"


def test_check_reports_every_problem_of_every_file_and_exits_1(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\nautomations: []\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nautomations:\n  - name: a\n    on: [x]\n    actions: []\n    extra: 1\n"
    )
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    missing = tmp_path / "missing.yaml"
    result = run("check", str(good), str(bad), str(empty), str(missing))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{good}: OK (0 automations)",
        f"{bad}:5:14: automations[0].actions: [] should be non-empty",
        f"{bad}:6:5: automations[0].extra: unknown key 'extra'",
        f"{empty}:1:1: the file is empty (no YAML document)",
        f"{missing}: cannot read the file: No such file or directory",
    ]
    assert f"{bad}: 2 problem(s)" in result.stderr


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith("automationd 0.1.0")
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2


def test_run_reads_the_config_path_from_the_environment(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["run"], environ={"AUTOMATIOND_CONFIG": str(missing)}) == 1


def test_receive_refuses_a_bad_listen_address() -> None:
    result = run("receive", "--listen", "nowhere")
    assert result.returncode == 2
    assert "'nowhere' is not host:port" in result.stderr
