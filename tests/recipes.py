"""The README's operator recipes (sh blocks), made runnable here: each line as written, with
`sudo` dropped, system folders moved into a test's temporary folder, and the lines that need
a running systemd or Debian's package manager left out."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

NOT_HERE = ("sudo apt-get ", "sudo systemctl ", "systemctl ", "journalctl ")
"""Lines that need Debian's package manager or systemd as PID 1: not run in tests."""


def sh_block(containing: str) -> str:
    """The one README sh block holding `containing`."""
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", README, re.S) if containing in b]
    assert len(blocks) == 1, f"{len(blocks)} sh blocks hold {containing!r}"
    return str(blocks[0])


def runnable(block: str, root: Path, replace: dict[str, str] | None = None) -> str:
    """A bash script of `block`: continued lines joined, lines in NOT_HERE skipped, `sudo `
    dropped, each `replace` made, then /opt/, /etc/ and /var/ moved under `root`."""
    lines = ["set -euo pipefail"]
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith(NOT_HERE):
            continue
        line = line.removeprefix("sudo ")
        for old, new in (replace or {}).items():
            line = line.replace(old, new)
        lines.append(re.sub(r"(?<![\w./-])/(?=(?:opt|etc|var)/)", f"{root}/", line))
    return "\n".join(lines) + "\n"
