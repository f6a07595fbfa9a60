"""Every settled record reaches the database exactly once: through outages, restarts and crashes."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from proxy.ledger import writer as writer_module
from proxy.ledger.database import create_ledger_engine
from proxy.ledger.journal import JournalFile
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.models import HourlyUsageRow, TraceRow, UsageRow
from proxy.ledger.rows import encode, request_id_of, row_of
from proxy.ledger.store import LedgerStore
from proxy.ledger.writer import LedgerWriter
from proxy.metering.usage import Price, PromptSplit, Usage, UsageRecord
from proxy.metrics import Metrics
from tests.support.relay import TcpRelay
from tests.support.waiting import eventually

CREATED_AT = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)


def record(
    number: int, trace_id: str | None = None, cost: str | None = "0.0012345678"
) -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{number:06d}",
        created_at=CREATED_AT,
        team="search",
        upstream="openai",
        endpoint="chat",
        model="gpt-4o",
        status="200",
        usage=Usage(input_tokens=100, cached_input_tokens=40, output_tokens=20, reasoning_tokens=5),
        price=None if cost is None else Price(Decimal(cost), "config:gpt-4o"),
        latency_seconds=0.5,
        trace_id=trace_id,
        tags={"feature": "search"},
        prompt_split=PromptSplit(system=60, tools=10, history=20, latest=10),
    )


async def count_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (await connection.execute(select(func.count()).select_from(UsageRow))).scalar_one()
        )


@asynccontextmanager
async def running_writer(
    database_url: str, journal_dir: Path, metrics: Metrics | None = None, drain_seconds: float = 2
) -> AsyncIterator[tuple[LedgerWriter, Metrics]]:
    metrics = metrics or Metrics(CollectorRegistry())
    engine = create_ledger_engine(database_url)
    writer = LedgerWriter(LedgerStore(engine), journal_dir, metrics.ledger, flush_seconds=0.01)
    writer.start()
    try:
        yield writer, metrics
    finally:
        await writer.stop(drain_seconds)
        await engine.dispose()


def gauge(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def test_records_reach_the_database_with_their_rollup_and_trace(
    database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(database_url)
    async with running_writer(database_url, tmp_path / "journal") as (writer, _):
        for number in range(1200):
            writer.publish(record(number, trace_id="trace-1" if number < 3 else None))
    engine = create_ledger_engine(database_url)
    try:
        assert await count_rows(engine) == 1200
        async with AsyncSession(engine) as session:
            rollup = (await session.execute(select(HourlyUsageRow))).scalars().all()
            trace = (await session.execute(select(TraceRow))).scalar_one()
            stored = await session.get_one(UsageRow, "req-000007")
    finally:
        await engine.dispose()
    (hour,) = rollup
    assert (hour.calls, hour.input_tokens, hour.cached_input_tokens) == (1200, 120_000, 48_000)
    assert hour.cost_usd == Decimal("0.0012345678") * 1200
    assert hour.prompt_system_tokens == 60 * 1200
    assert hour.hour.replace(tzinfo=UTC) == CREATED_AT.replace(minute=0)
    assert (trace.calls, trace.cost_usd) == (3, Decimal("0.0037037034"))
    assert stored.cost_usd == Decimal("0.0012345678") and stored.tags == {"feature": "search"}
    assert list((tmp_path / "journal").iterdir()) == []


async def test_a_record_written_twice_is_stored_and_rolled_up_once(database_url: str) -> None:
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    store = LedgerStore(engine)
    row = row_of(record(1, trace_id="trace-1"))
    try:
        assert await store.write([row]) == 1
        assert await store.write([row, row_of(record(2))]) == 1
        async with engine.connect() as connection:
            calls = (await connection.execute(select(func.sum(HourlyUsageRow.calls)))).scalar_one()
            trace_calls = (await connection.execute(select(TraceRow.calls))).scalar_one()
        assert (await count_rows(engine), calls, trace_calls) == (2, 2, 1)
    finally:
        await engine.dispose()


async def test_unpriced_records_keep_a_null_cost(database_url: str) -> None:
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    try:
        await LedgerStore(engine).write([row_of(record(1, cost=None))])
        async with engine.connect() as connection:
            cost = (await connection.execute(select(UsageRow.cost_usd))).scalar_one()
            unpriced = (
                await connection.execute(select(HourlyUsageRow.unpriced_calls))
            ).scalar_one()
        assert (cost, unpriced) == (None, 1)
    finally:
        await engine.dispose()


async def test_a_database_outage_loses_and_doubles_nothing(
    postgres_database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(postgres_database_url)
    url = make_url(postgres_database_url)
    relay = TcpRelay(url.host or "127.0.0.1", url.port or 5432)
    await relay.restore()
    through_relay = url.set(port=relay.port).render_as_string(hide_password=False)
    direct = create_ledger_engine(postgres_database_url)
    try:
        async with running_writer(through_relay, tmp_path / "journal") as (writer, metrics):
            for number in range(100):
                writer.publish(record(number))
            await eventually(lambda: gauge(metrics, "llm_proxy_ledger_queue_records") == 0)
            await relay.cut()
            for number in range(100, 400):
                writer.publish(record(number))
            await eventually(lambda: gauge(metrics, "llm_proxy_ledger_spooled_records") == 300)
            assert gauge(metrics, "llm_proxy_ledger_write_errors_total") > 0
            assert await count_rows(direct) == 100
            await relay.restore()
            await eventually(lambda: gauge(metrics, "llm_proxy_ledger_queue_records") == 0)
        assert await count_rows(direct) == 400
        async with direct.connect() as connection:
            calls = (await connection.execute(select(func.sum(HourlyUsageRow.calls)))).scalar_one()
        assert calls == 400
    finally:
        await relay.cut()
        await direct.dispose()


async def test_a_journal_left_by_a_dead_process_is_replayed_at_start(
    database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(database_url)
    journal_dir = tmp_path / "journal"
    dead = JournalFile.create(journal_dir)
    for number in range(50):
        dead.append(encode(row_of(record(number))))
    dead.append(b'{"request_id": "req-torn", "creat')  # the write a SIGKILL cut short
    dead.close(delete=False)  # the process died: its lock is gone, its file stays
    async with running_writer(database_url, journal_dir):
        engine = create_ledger_engine(database_url)
        try:
            await eventually(lambda: count_rows(engine))
            await eventually(lambda: not dead.path.exists())
            assert await count_rows(engine) == 50
        finally:
            await engine.dispose()


async def test_a_record_the_database_refuses_is_set_aside_and_the_rest_stored(
    database_url: str, tmp_path: Path
) -> None:
    # A cost past what the money columns hold (a journal of a version that did not cut it to
    # fit, say): refused by the database, it must not hold back the records around it.
    await upgrade_to_head(database_url)
    journal_dir = tmp_path / "journal"
    refused = encode({**row_of(record(3)), "cost_usd": Decimal("1e15")})
    dead = JournalFile.create(journal_dir)
    for number in range(8):
        dead.append(refused if number == 3 else encode(row_of(record(number))))
    dead.close(delete=False)
    async with running_writer(database_url, journal_dir) as (writer, metrics):
        engine = create_ledger_engine(database_url)
        try:
            await eventually(lambda: rows_are(engine, 7))
            writer.publish(record(8))  # and the writer goes on
            await eventually(lambda: rows_are(engine, 8))
        finally:
            await engine.dispose()
    assert (journal_dir / "rejected.jsonl").read_bytes() == refused
    assert gauge(metrics, "llm_proxy_ledger_write_errors_total") == 1


async def test_the_journal_of_a_live_process_is_left_alone(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(sqlite_database_url)
    journal_dir = tmp_path / "journal"
    alive = JournalFile.create(journal_dir)
    alive.append(encode(row_of(record(1))))
    try:
        async with running_writer(sqlite_database_url, journal_dir):
            await asyncio.sleep(0.2)
        engine = create_ledger_engine(sqlite_database_url)
        assert await count_rows(engine) == 0
        await engine.dispose()
        assert alive.path.exists()
    finally:
        alive.close(delete=True)


async def test_stopping_with_the_database_down_keeps_the_journal_for_the_next_start(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"
    async with running_writer(unreachable, journal_dir) as (writer, _):
        for number in range(10):
            writer.publish(record(number))
    (left,) = journal_dir.iterdir()
    await upgrade_to_head(sqlite_database_url)
    async with running_writer(sqlite_database_url, journal_dir):
        engine = create_ledger_engine(sqlite_database_url)
        await eventually(lambda: count_rows(engine))
        assert await count_rows(engine) == 10
        await engine.dispose()
    assert not left.exists()


class CountingStore(LedgerStore):
    """A store that counts its batches and takes `delay` seconds for each, as a remote one."""

    def __init__(self, engine: AsyncEngine, delay: float) -> None:
        super().__init__(engine)
        self.batch_sizes: list[int] = []
        self._delay = delay

    async def write_lines(self, lines: Sequence[bytes]) -> int:
        self.batch_sizes.append(len(lines))
        await asyncio.sleep(self._delay)
        return await super().write_lines(lines)


async def publish_steadily(writer: LedgerWriter, calls: int, every: float) -> None:
    for number in range(calls):
        writer.publish(record(number))
        await asyncio.sleep(every)


async def test_under_steady_load_records_go_in_batches_not_one_by_one(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(sqlite_database_url)
    engine = create_ledger_engine(sqlite_database_url)
    store = CountingStore(engine, delay=0.01)
    writer = LedgerWriter(store, tmp_path, Metrics(CollectorRegistry()).ledger, flush_seconds=0.1)
    writer.start()
    try:
        # A call every 2 ms for about a second, each batch taking 10 ms to store.
        await publish_steadily(writer, 400, 0.002)
    finally:
        await writer.stop(drain_seconds=5)
    try:
        assert await count_rows(engine) == 400
    finally:
        await engine.dispose()
    # One batch per flush (about 10, plus the drain): chasing each new record with its own
    # write would have made a batch of one or two records every 10 ms.
    assert len(store.batch_sizes) <= 20, store.batch_sizes


async def test_under_steady_load_the_journal_is_rotated_and_stays_small(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "_ROTATE_JOURNAL_BYTES", 20_000)
    await upgrade_to_head(database_url)
    journal_dir = tmp_path / "journal"
    engine = create_ledger_engine(database_url)
    store = CountingStore(engine, delay=0.005)
    writer = LedgerWriter(store, journal_dir, Metrics(CollectorRegistry()).ledger, 500, 0.02)
    writer.start()
    largest = 0

    async def watch_journal() -> None:
        nonlocal largest
        while True:
            largest = max([largest, *(path.stat().st_size for path in journal_dir.iterdir())])
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch_journal())
    try:
        # Never a pause long enough for the whole journal to be written at once.
        await publish_steadily(writer, 600, 0.001)
    finally:
        watcher.cancel()
        await writer.stop(drain_seconds=5)
    try:
        assert await count_rows(engine) == 600
    finally:
        await engine.dispose()
    line_bytes = len(encode(row_of(record(1))))
    # 600 records would be about 600 lines; rotated, the file never holds much past the limit.
    assert largest < 20_000 + 100 * line_bytes < 600 * line_bytes
    assert list(journal_dir.iterdir()) == []


def test_the_request_id_is_read_from_a_journal_line_as_decoding_it_would() -> None:
    plain = row_of(record(1))
    escaped = {**plain, "request_id": 'an "odd" id\\'}
    for row in (plain, escaped):
        assert request_id_of(encode(row)) == row["request_id"]


async def test_the_writer_reports_each_stored_call_by_its_request_id(
    database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    stored: list[str] = []
    metrics = Metrics(CollectorRegistry()).ledger
    writer = LedgerWriter(LedgerStore(engine), tmp_path, metrics, on_stored=stored.extend)
    writer.start()
    for number in range(3):
        writer.publish(record(number))
    await writer.stop(drain_seconds=5)
    await engine.dispose()
    assert stored == ["req-000000", "req-000001", "req-000002"]


async def rows_are(engine: AsyncEngine, expected: int) -> bool:
    return await count_rows(engine) == expected


def fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every journal append and fsync fails as on a full disk."""

    def refuse(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(JournalFile, "append", refuse)
    monkeypatch.setattr(JournalFile, "sync", refuse)


async def test_with_the_disk_full_records_go_from_memory_to_the_database(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    fill_the_disk(monkeypatch)
    async with running_writer(database_url, tmp_path / "journal") as (writer, metrics):
        for number in range(5):
            writer.publish(record(number))
        assert writer.journal_trouble == "records are held in memory"
        await eventually(lambda: rows_are(engine, 5))
        assert writer.journal_trouble is None  # nothing left waiting for the disk
        assert gauge(metrics, "llm_proxy_ledger_queue_records") == 0
        writer.publish(record(5))  # a failing fsync did not stop the writer
        await eventually(lambda: rows_are(engine, 6))
    await engine.dispose()


async def test_with_the_disk_full_and_the_database_down_stopping_takes_the_drain_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_the_disk(monkeypatch)
    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"
    engine = create_ledger_engine(unreachable)
    writer = LedgerWriter(LedgerStore(engine), tmp_path, Metrics(CollectorRegistry()).ledger)
    writer.start()
    writer.publish(record(1))
    started = time.monotonic()
    await asyncio.wait_for(writer.stop(drain_seconds=0.5), timeout=5)
    await engine.dispose()
    assert time.monotonic() - started < 3
