"""Bearer tokens through the real daemon: which routes need one, which tokens it takes, a
tokens file re-read on reload, and no token in the audit trail or the log."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.support import daemon, forwarding_rules, receiver


async def test_bearer_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# ops\ns3cret-one\n\ns3cret-two\n")
    async with receiver() as recv:
        rules = forwarding_rules(tmp_path, recv.url, server=f", tokens_file: {tokens}")
        async with daemon(rules) as proc:
            event = {"type": "job_done"}
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "s3cret-one"},
                {"Authorization": "Basic s3cret-one"},
            ):
                status, answer, response_headers = await proc.post_full(event, headers)
                assert status == 401, headers
                assert isinstance(answer, dict)
                assert "bearer token" in str(answer["error"])
                assert response_headers["WWW-Authenticate"].startswith("Bearer")
            for token in ("s3cret-one", "s3cret-two"):
                status, _ = await proc.post(event, {"Authorization": f"Bearer {token}"})
                assert status == 202
            async with aiohttp.ClientSession() as session:
                for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
                    async with session.get(f"{proc.url}{path}") as response:
                        assert response.status == 200, path
                async with session.get(f"{proc.url}/rules") as response:
                    assert response.status == 401
                async with session.post(f"{proc.url}/reload") as response:
                    assert response.status == 401
            tokens.write_text("s3cret-three\n")  # re-read on reload
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{proc.url}/reload", headers={"Authorization": "Bearer s3cret-one"}
                ) as response,
            ):
                assert response.status == 200
            status, _ = await proc.post(event, {"Authorization": "Bearer s3cret-one"})
            assert status == 401
            status, _ = await proc.post(event, {"Authorization": "Bearer s3cret-three"})
            assert status == 202
            assert await proc.stop() == 0
    assert "s3cret" not in (tmp_path / "audit.jsonl").read_text()
    assert not any("s3cret" in line for line in proc.log)
