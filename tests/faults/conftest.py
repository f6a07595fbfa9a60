"""The real parts fault tests share: `serve` processes in front of the fake upstream, a Postgres
ledger reached through a relay that a test can cut, and clients that keep what each call got."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from benchmarks.targets import scrape
from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.models import HourlyUsageRow, UsageRow
from tests.conftest import single_upstream_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.process import ProxyProcess
from tests.support.relay import TcpRelay

QUEUE_METRIC = "llm_proxy_ledger_queue_records"
SPOOLED_METRIC = "llm_proxy_ledger_spooled_records"
WRITE_ERRORS_METRIC = "llm_proxy_ledger_write_errors_total"
METERED_METRIC = "llm_proxy_requests_total"
MESSAGES = [{"role": "user", "content": "Hi"}]


@dataclass(frozen=True)
class LedgerTotals:
    rows: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    rollup_calls: int  # what the hourly rollup counted: more than `rows` if a call was doubled


class PostgresLedger:
    """A migrated Postgres ledger; the proxy reaches it through `relay`, the test directly."""

    def __init__(self, url: str) -> None:
        direct = make_url(url)
        self.relay = TcpRelay(direct.host or "127.0.0.1", direct.port or 5432)
        self.url_through_relay = direct.set(port=self.relay.port).render_as_string(
            hide_password=False
        )
        self.name = direct.database or ""
        self._engine = create_ledger_engine(url)

    async def rows(self) -> int:
        async with self._engine.connect() as connection:
            count = select(func.count()).select_from(UsageRow)
            return int((await connection.execute(count)).scalar_one())

    async def request_ids(self) -> list[str]:
        async with self._engine.connect() as connection:
            return list((await connection.execute(select(UsageRow.request_id))).scalars())

    async def statuses(self) -> dict[str, int]:
        """How many rows have each status."""
        query = select(UsageRow.status, func.count()).group_by(UsageRow.status)
        async with self._engine.connect() as connection:
            return {status: count for status, count in (await connection.execute(query)).all()}

    async def totals(self) -> LedgerTotals:
        sums = select(
            func.count(),
            func.coalesce(func.sum(UsageRow.input_tokens), 0),
            func.coalesce(func.sum(UsageRow.output_tokens), 0),
            func.coalesce(func.sum(UsageRow.cost_usd), 0),
        )
        rollup = select(func.coalesce(func.sum(HourlyUsageRow.calls), 0))
        async with self._engine.connect() as connection:
            rows, input_tokens, output_tokens, cost = (await connection.execute(sums)).one()
            rollup_calls = (await connection.execute(rollup)).scalar_one()
        return LedgerTotals(rows, input_tokens, output_tokens, Decimal(cost), rollup_calls)

    async def dispose(self) -> None:
        await self._engine.dispose()


@pytest.fixture
async def ledger(postgres_database_url: str) -> AsyncIterator[PostgresLedger]:
    """A migrated Postgres ledger of the test's own, its relay open."""
    await upgrade_to_head(postgres_database_url)
    ledger = PostgresLedger(postgres_database_url)
    await ledger.relay.restore()
    try:
        yield ledger
    finally:
        await ledger.relay.cut()
        await ledger.dispose()


class Proxies:
    """Starts `metering-proxy serve` processes on the ledger (through its relay) in front of the
    fake upstream; each journals to `journal_dir` unless told otherwise."""

    def __init__(self, tmp_path: Path, upstream_url: str, ledger: PostgresLedger) -> None:
        self._tmp_path = tmp_path
        self._upstream_url = upstream_url
        self._ledger = ledger
        self.journal_dir = tmp_path / "journal"
        self.started: list[ProxyProcess] = []

    async def start(
        self, settings: str = "", ledger: str = "", journal_dir: Path | None = None
    ) -> ProxyProcess:
        """A ready process; `settings` are top-level TOML (keys first), `ledger` `[ledger]` keys."""
        config = self._tmp_path / f"proxy-{len(self.started)}.toml"
        config.write_text(
            f"{settings}\n{single_upstream_config(self._upstream_url)}"
            f'[ledger]\njournal_dir = "{journal_dir or self.journal_dir}"\n{ledger}\n'
        )
        environ = {"METERING_DATABASE_URL": self._ledger.url_through_relay}
        process = ProxyProcess("--config", str(config), cwd=self._tmp_path, environ=environ)
        self.started.append(process)
        await asyncio.to_thread(process.wait_ready)
        return process

    def kill_leftovers(self) -> None:
        for process in self.started:
            if process.running:
                process.kill()


@pytest.fixture
def proxies(
    tmp_path: Path, fake_upstream: tuple[FakeUpstream, str], ledger: PostgresLedger
) -> Iterator[Proxies]:
    started = Proxies(tmp_path, fake_upstream[1], ledger)
    try:
        yield started
    finally:
        started.kill_leftovers()


async def metric(proxy: ProxyProcess, name: str) -> float:
    """The sum of the samples of `name` on the proxy's `/metrics`."""
    return await asyncio.to_thread(scrape, proxy.url, name)


@dataclass(frozen=True)
class Answer:
    """What a client got from one chat call."""

    request_id: str
    status: int
    input_tokens: int
    output_tokens: int
    complete: bool  # the whole answer arrived: the JSON body, or a stream up to `[DONE]`


def proxy_client(proxy: ProxyProcess, connections: int = 200) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{proxy.url}/v1",
        headers={"Authorization": "Bearer sk-client"},
        limits=httpx.Limits(max_connections=connections),
        timeout=60,
    )


async def chat(client: httpx.AsyncClient, stream: bool, model: str = "gpt-4o") -> Answer:
    """One chat call, streamed (usage asked for) or not, read to its end."""
    body: dict[str, object] = {"model": model, "messages": MESSAGES}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "chat/completions", json=body) as response:
        request_id = response.headers["x-metering-request-id"]
        if not stream:
            document = orjson.loads(await response.aread())
            usage = document.get("usage") or {}
            return Answer(
                request_id,
                response.status_code,
                usage.get("prompt_tokens", 0),
                usage.get("completion_tokens", 0),
                complete=True,
            )
        events = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    documents = [orjson.loads(event[6:]) for event in events if event != "data: [DONE]"]
    usage = next((document["usage"] for document in documents if document.get("usage")), {})
    return Answer(
        request_id,
        response.status_code,
        usage.get("prompt_tokens", 0),
        usage.get("completion_tokens", 0),
        complete=bool(events) and events[-1] == "data: [DONE]",
    )


async def call_steadily(
    client: httpx.AsyncClient, calls: int, concurrency: int, answers: list[Answer]
) -> None:
    """`calls` chat calls, half of them streamed, `concurrency` at a time; each answer is added
    to `answers` as it arrives, so that a test can act part way through."""
    numbers = iter(range(calls))

    async def caller() -> None:
        for number in numbers:
            answers.append(await chat(client, stream=number % 2 == 1))

    await asyncio.gather(*(caller() for _ in range(concurrency)))
