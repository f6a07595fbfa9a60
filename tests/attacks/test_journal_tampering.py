"""The journal tampered with under a running `serve` process, the database down: its directory
deleted, put out of reach, its file replaced. Records made meanwhile are written to a new journal
file, so a SIGKILL and a restart lose none; `/readyz` answers 503 while they are on no disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx

from tests.faults import conftest as faults
from tests.faults.conftest import (
    QUEUE_METRIC,
    SPOOLED_METRIC,
    Answer,
    PostgresLedger,
    Proxies,
    chat,
    metric,
    proxy_client,
)
from tests.faults.test_database_faults import assert_stored_once
from tests.ledger.test_crash import journaled_records
from tests.support.process import ProxyProcess
from tests.support.waiting import eventually

# The fault suite's fixtures: a Postgres ledger behind a relay, and `serve` processes on it.
ledger = faults.ledger
proxies = faults.proxies

CALLS = 10
# A short fsync round, so that a tampered journal is noticed within a few tens of milliseconds.
FAST_LEDGER = "flush_seconds = 0.05\nfsync_seconds = 0.05"


async def make_calls(proxy: ProxyProcess, calls: int) -> list[Answer]:
    """`calls` chat calls, every other one streamed; each must be answered in full."""
    async with proxy_client(proxy) as client:
        answers = [await chat(client, stream=number % 2 == 1) for number in range(calls)]
    assert all(answer.status == 200 and answer.complete for answer in answers)
    return answers


async def readiness(proxy: ProxyProcess) -> tuple[int, object]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{proxy.url}/readyz")
    return response.status_code, response.json()


async def ready(proxy: ProxyProcess) -> bool:
    return (await readiness(proxy))[0] == 200


async def spooled_are(proxy: ProxyProcess, expected: int) -> bool:
    return await metric(proxy, SPOOLED_METRIC) == expected


async def stored_once_after_a_restart(
    proxies: Proxies, ledger: PostgresLedger, answers: list[Answer]
) -> None:
    """With the database back, a new process replays what the killed one journaled."""
    await ledger.relay.restore()
    await proxies.start(ledger=FAST_LEDGER)
    await assert_stored_once(ledger, answers)


async def test_calls_journaled_before_and_after_the_journal_directory_is_deleted_survive_a_sigkill(
    proxies: Proxies, ledger: PostgresLedger
) -> None:
    proxy = await proxies.start(ledger=FAST_LEDGER)
    await ledger.relay.cut()
    answers = await make_calls(proxy, CALLS // 2)
    await eventually(lambda: journaled_records(proxies.journal_dir) == CALLS // 2)
    shutil.rmtree(proxies.journal_dir)  # the records only in the deleted file now
    answers += await make_calls(proxy, CALLS - CALLS // 2)
    await eventually(lambda: journaled_records(proxies.journal_dir) == CALLS)
    assert await ready(proxy)
    await eventually(lambda: spooled_are(proxy, CALLS))
    proxy.kill()
    await stored_once_after_a_restart(proxies, ledger, answers)


async def test_readyz_is_503_while_the_journal_directory_cannot_be_made_again(
    proxies: Proxies, ledger: PostgresLedger
) -> None:
    proxy = await proxies.start(ledger=FAST_LEDGER)
    await ledger.relay.cut()
    shutil.rmtree(proxies.journal_dir)
    proxies.journal_dir.write_text("a file where the journal directory was\n")
    answers = await make_calls(proxy, CALLS)

    async def unready() -> bool:
        return (await readiness(proxy))[0] == 503

    await eventually(unready)
    assert await readiness(proxy) == (
        503,
        {
            "status": "journal_unwritable",
            "detail": "the journal file was deleted or replaced and cannot be made again",
        },
    )
    # On no disk: not spooled, though still on their way to the database.
    assert (await metric(proxy, SPOOLED_METRIC), await metric(proxy, QUEUE_METRIC)) == (0, CALLS)
    proxies.journal_dir.unlink()
    await eventually(lambda: ready(proxy))
    assert journaled_records(proxies.journal_dir) == CALLS
    await eventually(lambda: spooled_are(proxy, CALLS))
    proxy.kill()
    await stored_once_after_a_restart(proxies, ledger, answers)


async def test_calls_journaled_in_a_file_since_replaced_by_another_survive_a_sigkill(
    proxies: Proxies, ledger: PostgresLedger, tmp_path: Path
) -> None:
    proxy = await proxies.start(ledger=FAST_LEDGER)
    await ledger.relay.cut()
    answers = await make_calls(proxy, CALLS // 2)
    await eventually(lambda: journaled_records(proxies.journal_dir) == CALLS // 2)
    (journal,) = proxies.journal_dir.glob("journal-*")
    replacement = tmp_path / "replacement"
    replacement.write_bytes(b"")
    os.replace(replacement, journal)  # the same name, another inode, none of the records
    answers += await make_calls(proxy, CALLS - CALLS // 2)
    await eventually(lambda: journaled_records(proxies.journal_dir) == CALLS)
    assert journal.read_bytes() == b""  # the file put in its place is left alone
    assert await ready(proxy)
    proxy.kill()
    await stored_once_after_a_restart(proxies, ledger, answers)
