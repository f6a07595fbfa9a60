"""A journal file deleted or replaced under a running writer (its directory removed, say) is made
again with every record not yet in the database; until it can be, readiness and the gauges say
that records are not on disk, and they still reach the database."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.journal import JournalFile
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.rows import encode, row_of
from proxy.ledger.store import LedgerStore
from proxy.ledger.writer import LedgerWriter
from proxy.metrics import Metrics
from tests.ledger.test_writer import (
    CountingStore,
    gauge,
    record,
    rows_are,
    running_writer,
)
from tests.support.waiting import eventually

UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"
CANNOT_BE_MADE = "the journal file was deleted or replaced and cannot be made again"
QUEUE = "llm_proxy_ledger_queue_records"
SPOOLED = "llm_proxy_ledger_spooled_records"


def lines_of(numbers: range) -> list[bytes]:
    return [encode(row_of(record(number))) for number in numbers]


def journaled(directory: Path) -> list[bytes]:
    """The lines of every journal file in `directory`, in no particular order."""
    if not directory.is_dir():
        return []
    return sorted(
        line
        for path in directory.glob("journal-*.jsonl")
        for line in path.read_bytes().splitlines(keepends=True)
    )


def journal_holds(directory: Path, lines: list[bytes]) -> bool:
    return journaled(directory) == sorted(lines)


def block(directory: Path) -> None:
    """Delete the journal directory and put a file in its place: it cannot be made again."""
    shutil.rmtree(directory)
    directory.write_text("not a directory\n")


async def test_records_of_a_deleted_journal_directory_are_rewritten_to_a_new_journal(
    tmp_path: Path,
) -> None:
    journal_dir = tmp_path / "journal"
    async with running_writer(UNREACHABLE, journal_dir, drain_seconds=0.1) as (writer, metrics):
        for number in range(10):
            writer.publish(record(number))
        shutil.rmtree(journal_dir)
        await eventually(lambda: journal_holds(journal_dir, lines_of(range(10))))
        assert writer.journal_trouble is None
        assert gauge(metrics, SPOOLED) == 10
        writer.publish(record(10))  # and the new file takes the next records
        await eventually(lambda: journal_holds(journal_dir, lines_of(range(11))))


async def test_a_replaced_journal_file_is_rewritten_and_the_file_put_in_its_place_kept(
    tmp_path: Path,
) -> None:
    journal_dir = tmp_path / "journal"
    async with running_writer(UNREACHABLE, journal_dir, drain_seconds=0.1) as (writer, _):
        for number in range(5):
            writer.publish(record(number))
        (original,) = journal_dir.iterdir()
        replacement = tmp_path / "replacement"
        replacement.write_bytes(b"someone else's\n")
        os.replace(replacement, original)  # same name, another inode
        await eventually(lambda: len(list(journal_dir.iterdir())) == 2)
        (rewritten,) = set(journal_dir.iterdir()) - {original}
        assert rewritten.read_bytes() == b"".join(lines_of(range(5)))
    assert original.read_bytes() == b"someone else's\n"


async def test_a_file_put_in_place_of_the_journal_is_not_deleted_with_it(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(sqlite_database_url)
    journal_dir = tmp_path / "journal"
    engine = create_ledger_engine(sqlite_database_url)
    async with running_writer(sqlite_database_url, journal_dir) as (writer, _):
        writer.publish(record(1))
        await eventually(lambda: rows_are(engine, 1))
        (original,) = journal_dir.iterdir()
        replacement = tmp_path / "replacement"
        replacement.write_bytes(b"someone else's\n")
        os.replace(replacement, original)
    await engine.dispose()
    # The writer had nothing left to keep, so it deleted its journal: by name, not the file.
    assert list(journal_dir.iterdir()) == [original]
    assert original.read_bytes() == b"someone else's\n"


async def test_while_the_journal_cannot_be_made_again_its_records_are_not_called_spooled(
    tmp_path: Path,
) -> None:
    journal_dir = tmp_path / "journal"
    async with running_writer(UNREACHABLE, journal_dir, drain_seconds=0.1) as (writer, metrics):
        writer.publish(record(0))
        block(journal_dir)
        for number in range(1, 5):
            writer.publish(record(number))
        await eventually(lambda: writer.journal_trouble == CANNOT_BE_MADE)
        assert (gauge(metrics, QUEUE), gauge(metrics, SPOOLED)) == (5, 0)
        journal_dir.unlink()  # it can be made again
        await eventually(lambda: writer.journal_trouble is None)
        assert journal_holds(journal_dir, lines_of(range(5)))
        assert (gauge(metrics, QUEUE), gauge(metrics, SPOOLED)) == (5, 5)


async def test_while_the_journal_cannot_be_made_again_records_still_reach_the_database(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(sqlite_database_url)
    journal_dir = tmp_path / "journal"
    engine = create_ledger_engine(sqlite_database_url)
    try:
        async with running_writer(sqlite_database_url, journal_dir) as (writer, _):
            block(journal_dir)
            await eventually(lambda: writer.journal_trouble == CANNOT_BE_MADE)
            for number in range(5):
                writer.publish(record(number))
            await eventually(lambda: rows_are(engine, 5))
            assert writer.journal_trouble == CANNOT_BE_MADE
    finally:
        await engine.dispose()


async def test_a_journal_deleted_just_before_shutdown_is_left_for_the_next_start(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    async with running_writer(UNREACHABLE, journal_dir, drain_seconds=0.1) as (writer, _):
        for number in range(5):
            writer.publish(record(number))
        shutil.rmtree(journal_dir)  # and stopped before the next fsync round
    assert journal_holds(journal_dir, lines_of(range(5)))
    await upgrade_to_head(sqlite_database_url)
    async with running_writer(sqlite_database_url, journal_dir):
        engine = create_ledger_engine(sqlite_database_url)
        await eventually(lambda: rows_are(engine, 5))
        await engine.dispose()


class HangingStore(LedgerStore):
    """A database that takes a batch and never answers (a lock held, a network gone silent)."""

    def __init__(self) -> None:
        super().__init__(create_ledger_engine(UNREACHABLE))
        self.writing = asyncio.Event()

    async def write_lines(self, lines: Sequence[bytes]) -> int:
        self.writing.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_deleted_journal_is_rewritten_while_a_database_write_hangs(
    tmp_path: Path,
) -> None:
    journal_dir = tmp_path / "journal"
    store = HangingStore()
    writer = LedgerWriter(store, journal_dir, Metrics(CollectorRegistry()).ledger)
    writer.start()
    try:
        for number in range(3):
            writer.publish(record(number))
        await asyncio.wait_for(store.writing.wait(), timeout=5)
        shutil.rmtree(journal_dir)
        await eventually(lambda: journal_holds(journal_dir, lines_of(range(3))))
    finally:
        await writer.stop(drain_seconds=0.1)


async def test_the_journal_is_fsynced_while_a_database_write_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = 0
    sync = JournalFile.sync

    def counted(journal: JournalFile) -> None:
        nonlocal syncs
        syncs += 1
        sync(journal)

    monkeypatch.setattr(JournalFile, "sync", counted)
    store = HangingStore()
    writer = LedgerWriter(store, tmp_path, Metrics(CollectorRegistry()).ledger)
    writer.start()
    try:
        writer.publish(record(0))
        await asyncio.wait_for(store.writing.wait(), timeout=5)
        writer.publish(record(1))
        await eventually(lambda: syncs > 0)
    finally:
        await writer.stop(drain_seconds=0.1)


async def test_records_reach_the_database_while_their_journal_is_deleted_again_and_again(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(sqlite_database_url)
    journal_dir = tmp_path / "journal"
    engine = create_ledger_engine(sqlite_database_url)
    # A batch takes 20 ms to store and the fsync round comes every 5 ms: the journal mostly
    # moves to a new file while a batch read from the old one is on its way.
    store = CountingStore(engine, delay=0.02)
    metrics = Metrics(CollectorRegistry()).ledger
    writer = LedgerWriter(store, journal_dir, metrics, 20, flush_seconds=0.01, fsync_seconds=0.005)
    writer.start()
    try:
        for number in range(300):
            writer.publish(record(number))
            if number % 10 == 0:
                shutil.rmtree(journal_dir, ignore_errors=True)
            await asyncio.sleep(0.002)
        await eventually(lambda: rows_are(engine, 300))  # by the running writer, not the drain
        assert sum(store.batch_sizes) == 300  # none sent twice either: the offsets stayed right
    finally:
        await writer.stop(drain_seconds=5)
        await engine.dispose()
    assert journaled(journal_dir) == []
