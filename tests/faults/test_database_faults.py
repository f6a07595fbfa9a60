"""Database faults under load through a real proxy process: the database cut off, stalled by a
lock, and the journal's disk full. Calls are served all along; every call lands exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from proxy.ledger.database import DATABASE_ERRORS, create_ledger_engine
from tests.faults.conftest import (
    SPOOLED_METRIC,
    WRITE_ERRORS_METRIC,
    Answer,
    PostgresLedger,
    Proxies,
    call_steadily,
    chat,
    metric,
    proxy_client,
)
from tests.support.databases import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER
from tests.support.process import ProxyProcess
from tests.support.waiting import eventually

CALLS = 300
# The fake upstream's usage for every chat call: 12 prompt tokens, 6 completion tokens.
INPUT_TOKENS, OUTPUT_TOKENS = 12, 6


async def metric_above(proxy: ProxyProcess, name: str, floor: float) -> bool:
    return await metric(proxy, name) > floor


async def rows_are(ledger: PostgresLedger, expected: int) -> bool:
    return await ledger.rows() == expected


async def assert_stored_once(ledger: PostgresLedger, answers: list[Answer]) -> None:
    """Every answered call is one row, with the fake upstream's usage, and nothing else is."""
    await eventually(lambda: rows_are(ledger, len(answers)), seconds=30)
    totals = await ledger.totals()
    assert (totals.rows, totals.rollup_calls) == (len(answers), len(answers))
    assert (totals.input_tokens, totals.output_tokens) == (
        INPUT_TOKENS * len(answers),
        OUTPUT_TOKENS * len(answers),
    )
    assert sorted(await ledger.request_ids()) == sorted(answer.request_id for answer in answers)


def assert_all_served(answers: list[Answer], expected: int) -> None:
    assert len(answers) == expected
    assert all(answer.status == 200 and answer.complete for answer in answers)


async def stop_cleanly(proxy: ProxyProcess) -> None:
    assert await asyncio.to_thread(proxy.terminate) == 0, proxy.log.read_text()


async def test_calls_made_while_the_database_is_cut_are_served_and_stored_once_it_is_back(
    proxies: Proxies, ledger: PostgresLedger
) -> None:
    proxy = await proxies.start()
    answers: list[Answer] = []
    async with proxy_client(proxy) as client:
        load = asyncio.create_task(call_steadily(client, CALLS, 8, answers))
        await eventually(lambda: len(answers) >= 50)
        await ledger.relay.cut()
        await eventually(lambda: len(answers) >= 200)
        # Records wait in the journal: the proxy is still ready (a database outage does not
        # take it out of a load balancer), and the spooled-records gauge shows the backlog.
        await eventually(lambda: metric_above(proxy, SPOOLED_METRIC, 0))
        readiness = await client.get(f"{proxy.url}/readyz")
        assert (readiness.status_code, readiness.json()["status"]) == (200, "ready")
        assert await ledger.rows() < len(answers)
        await ledger.relay.restore()
        await load
    assert_all_served(answers, CALLS)
    await assert_stored_once(ledger, answers)
    await stop_cleanly(proxy)


async def connect(ledger: PostgresLedger) -> asyncpg.Connection:
    """A session of the test's own on the ledger's database."""
    return await asyncpg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, database=ledger.name
    )


@asynccontextmanager
async def table_locked(ledger: PostgresLedger, table: str = "usage_records") -> AsyncIterator[None]:
    """Another session holds an EXCLUSIVE lock on `table`: writes to it wait, reads go on."""
    connection = await connect(ledger)
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        yield
        await transaction.rollback()
    finally:
        await connection.close()


async def sessions(ledger: PostgresLedger, where: str) -> int:
    """How many sessions on the ledger's database `pg_stat_activity` shows matching `where`."""
    connection = await connect(ledger)
    try:
        query = f"SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND {where}"
        return int(await connection.fetchval(query, ledger.name))
    finally:
        await connection.close()


async def a_write_waits_on_a_lock(ledger: PostgresLedger) -> bool:
    return await sessions(ledger, "wait_event_type = 'Lock'") > 0


async def test_calls_are_answered_while_a_lock_stalls_the_ledger_writes(
    proxies: Proxies, ledger: PostgresLedger
) -> None:
    proxy = await proxies.start()
    answers: list[Answer] = []
    async with proxy_client(proxy) as client:
        answers.append(await chat(client, stream=False))
        await eventually(lambda: rows_are(ledger, 1))
        async with table_locked(ledger):
            answers.append(await chat(client, stream=False))
            await eventually(lambda: a_write_waits_on_a_lock(ledger))
            # Were the request path to wait on the database, these would wait for the lock,
            # which is held until they are all answered.
            await asyncio.wait_for(call_steadily(client, CALLS, 4, answers), timeout=60)
            assert await a_write_waits_on_a_lock(ledger)
            assert await ledger.rows() == 1
    assert_all_served(answers, CALLS + 2)
    await assert_stored_once(ledger, answers)
    await stop_cleanly(proxy)


async def test_a_ledger_write_stuck_behind_a_lock_times_out_and_is_retried(
    proxies: Proxies, ledger: PostgresLedger
) -> None:
    proxy = await proxies.start(ledger="statement_timeout_seconds = 1")
    async with proxy_client(proxy) as client, table_locked(ledger):
        answers = [await chat(client, stream=False) for _ in range(20)]
        # Without a timeout the write would wait on the lock for as long as it is held, with no
        # failure anywhere to show that records are not reaching the database.
        await eventually(lambda: metric_above(proxy, WRITE_ERRORS_METRIC, 0), seconds=15)
        assert await metric(proxy, SPOOLED_METRIC) > 0
    # The statements cancelled by the timeout stored nothing, so the retries double nothing.
    await assert_stored_once(ledger, answers)
    await stop_cleanly(proxy)


async def test_a_postgres_statement_past_the_timeout_fails_and_is_cancelled_on_the_server(
    ledger: PostgresLedger,
) -> None:
    engine = create_ledger_engine(ledger.url_through_relay, statement_timeout_seconds=0.5)

    async def cancelled_on_the_server() -> bool:
        return await sessions(ledger, "state = 'active' AND query LIKE 'SELECT pg_sleep%'") == 0

    try:
        with pytest.raises(DATABASE_ERRORS):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT pg_sleep(30)"))
        await eventually(cancelled_on_the_server)
        async with engine.connect() as connection:  # the pool still serves
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (mounting needs root): a journal on it is full after about 80 records."""
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mounting a small tmpfs needs root, and CI runs every test")
        pytest.skip("mounting a small tmpfs needs root")
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount_point)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount_point
    finally:
        # Lazy: a proxy left running by a failed test must not keep the mount forever.
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True, capture_output=True)


async def test_with_the_journal_disk_full_calls_are_served_and_stored_from_memory(
    proxies: Proxies, ledger: PostgresLedger, tiny_disk: Path
) -> None:
    proxy = await proxies.start(journal_dir=tiny_disk)
    # The database is away too, so records pile up: on the disk until it is full, then in memory.
    await ledger.relay.cut()
    answers: list[Answer] = []
    async with proxy_client(proxy) as client:
        await call_steadily(client, CALLS, 8, answers)
        readiness = await client.get(f"{proxy.url}/readyz")
        assert readiness.status_code == 503
        assert readiness.json() == {
            "status": "journal_unwritable",
            "detail": "records are held in memory",
        }
        await ledger.relay.restore()
        await assert_stored_once(ledger, answers)

        async def ready_again() -> bool:
            return (await client.get(f"{proxy.url}/readyz")).status_code == 200

        await eventually(ready_again)
    assert_all_served(answers, CALLS)
    await stop_cleanly(proxy)
    assert await asyncio.to_thread(os.listdir, tiny_disk) == []
