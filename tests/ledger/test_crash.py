"""A proxy killed outright loses no record: the next start replays its journal."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import openai
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.models import UsageRow
from tests.conftest import single_upstream_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.process import ProxyProcess
from tests.support.relay import TcpRelay

CALLS = 20


def make_calls(proxy_url: str) -> None:
    client = openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="sk-client", max_retries=0)
    for _ in range(CALLS):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])


def journaled_records(journal_dir: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in journal_dir.glob("journal-*"))


async def test_records_of_a_sigkilled_proxy_reach_the_database_after_restart(
    postgres_database_url: str, fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    await upgrade_to_head(postgres_database_url)
    url = make_url(postgres_database_url)
    relay = TcpRelay(url.host or "127.0.0.1", url.port or 5432)  # cut: the database is away
    through_relay = url.set(port=relay.port).render_as_string(hide_password=False)
    journal_dir = tmp_path / "journal"
    config = tmp_path / "proxy.toml"
    config.write_text(
        single_upstream_config(fake_upstream[1]) + f'[ledger]\njournal_dir = "{journal_dir}"\n'
    )
    environ = {"METERING_DATABASE_URL": through_relay}
    arguments = ("--config", str(config))

    first = ProxyProcess(*arguments, cwd=tmp_path, environ=environ)
    await asyncio.to_thread(first.wait_ready)
    await asyncio.to_thread(make_calls, first.url)
    deadline = time.monotonic() + 10
    while journaled_records(journal_dir) < CALLS:
        assert time.monotonic() < deadline, "the calls never reached the journal"
        await asyncio.sleep(0.05)
    first.kill()

    await relay.restore()
    engine = create_ledger_engine(postgres_database_url)
    second = ProxyProcess(*arguments, cwd=tmp_path, environ=environ)
    try:
        await asyncio.to_thread(second.wait_ready)
        deadline = time.monotonic() + 20
        while True:
            async with engine.connect() as connection:
                count = (
                    await connection.execute(select(func.count()).select_from(UsageRow))
                ).scalar_one()
            if count >= CALLS or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert count == CALLS
    finally:
        assert await asyncio.to_thread(second.terminate) == 0, second.log.read_text()
        await engine.dispose()
        await relay.cut()
    assert journaled_records(journal_dir) == 0
