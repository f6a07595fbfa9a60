"""SIGTERM: calls in flight finish, the ledger gets their records, the process exits 0."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.models import UsageRow
from tests.conftest import single_upstream_config
from tests.support.databases import sqlite_url
from tests.support.fake_upstream import FakeUpstream
from tests.support.process import ProxyProcess

HELD = {"model": "held-stream", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


def stream_to_the_end(proxy_url: str) -> list[str]:
    with httpx.stream("POST", f"{proxy_url}/v1/chat/completions", json=HELD, timeout=30) as answer:
        return [line for line in answer.iter_lines() if line]


async def test_a_stream_in_flight_at_sigterm_finishes_and_is_recorded(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    fake, upstream_url = fake_upstream
    config = tmp_path / "proxy.toml"
    config.write_text(single_upstream_config(upstream_url))
    database_url = sqlite_url(tmp_path)
    proxy = ProxyProcess(
        "--config", str(config), cwd=tmp_path, environ={"METERING_DATABASE_URL": database_url}
    )
    await asyncio.to_thread(proxy.wait_ready)
    stream = asyncio.create_task(asyncio.to_thread(stream_to_the_end, proxy.url))
    assert await asyncio.to_thread(fake.first_chunk_sent.wait, 10)
    proxy.send_sigterm()
    await asyncio.sleep(0.5)
    assert proxy.running, "the proxy quit with a stream in flight"
    fake.release()
    lines = await stream
    assert lines[-1] == "data: [DONE]"
    assert await asyncio.to_thread(proxy.wait) == 0
    engine = create_ledger_engine(database_url)
    try:
        async with AsyncSession(engine) as session:
            (record,) = (await session.execute(select(UsageRow))).scalars().all()
    finally:
        await engine.dispose()
    assert (record.model, record.status, record.output_tokens) == ("held-stream", "200", 6)
