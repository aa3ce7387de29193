"""The daemon serving HTTPS (`server.tls`), as a real process: events taken over TLS with a
certificate made at test time, plain HTTP refused."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.support import daemon, forwarding_rules, receiver


async def test_tls(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:  # .ci/run installs it
        pytest.fail("openssl is not installed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(
        subprocess.run,
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    async with receiver() as recv:
        rules = forwarding_rules(tmp_path, recv.url, server=f", tls: {{cert: {cert}, key: {key}}}")
        async with daemon(rules) as proc:
            assert proc.url.startswith("https://")
            context = ssl.create_default_context(cafile=str(cert))
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    f"{proc.url}/events", json={"type": "job_done"}, ssl=context
                ) as response:
                    assert response.status == 202
                with pytest.raises(aiohttp.ClientError):
                    async with session.post(
                        f"{proc.url.replace('https', 'http')}/events", json={"type": "job_done"}
                    ):
                        pass
            await recv.wait_for(1)
            assert await proc.stop() == 0
