"""The ledger sink: a settled record goes to the journal at once, and to the database in batches.

The request path only appends a line to the journal (and wakes the writer when a batch is
ready). A background task copies whole lines from the journal to the database, a batch per
transaction, and truncates the journal once the database has everything. When the database
fails, the task backs off and retries the same lines, in order; nothing waits on it and nothing is
dropped. If the journal itself cannot be written (a full disk), records are kept in memory until
it can, and readiness says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge

from proxy.ledger.database import DATABASE_ERRORS
from proxy.ledger.journal import JournalFile, claimed, orphaned_journals, set_aside
from proxy.ledger.rows import decode, encode, request_id_of, row_of
from proxy.ledger.store import LedgerStore, RejectedBatch
from proxy.metering.usage import UsageRecord

logger = logging.getLogger(__name__)

_FIRST_BACKOFF_SECONDS = 0.1
_LONGEST_BACKOFF_SECONDS = 5.0
_MAX_RECORDS_IN_MEMORY = 1_000_000
_ROTATE_JOURNAL_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class LedgerMetrics:
    queue: Gauge  # records settled and not yet in the database
    spooled: Gauge  # of those, the ones waiting on a failed database or left by a dead process
    write_errors: Counter


class LedgerWriter:
    name = "ledger"

    def __init__(
        self,
        store: LedgerStore,
        journal_directory: Path,
        metrics: LedgerMetrics,
        batch_size: int = 500,
        flush_seconds: float = 0.2,
        fsync_seconds: float = 0.2,
        on_stored: Callable[[list[str]], None] = lambda request_ids: None,
    ) -> None:
        self._store = store
        self._on_stored = on_stored
        self._directory = journal_directory
        self._metrics = metrics
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._fsync_seconds = fsync_seconds
        self._journal: JournalFile | None = None
        self._written_offset = 0  # journal bytes already in the database
        self._pending = 0  # journal records not yet in the database
        self._in_memory: deque[bytes] = deque()  # records the journal could not take
        self._orphaned = 0
        self._unsynced = False
        self._last_sync = time.monotonic()
        self._backoff = 0.0  # seconds to wait after the last failed write; 0 while healthy
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def journal_writable(self) -> bool:
        """False while records wait in memory because the journal could not be written."""
        return not self._in_memory

    def start(self) -> None:
        """Open this process's journal and start copying to the database."""
        self._journal = JournalFile.create(self._directory)
        self._task = asyncio.create_task(self._run())

    def publish(self, record: UsageRecord) -> None:
        line = encode(row_of(record))
        journal = self._journal
        assert journal is not None, "start() the writer first"
        if self._in_memory and not self._retry_journaling(journal):
            self._keep_in_memory(line)
        else:
            try:
                journal.append(line)
                self._pending += 1
                self._unsynced = True
            except OSError as error:
                logger.error(
                    "cannot write the ledger journal (%s): keeping records in memory", error
                )
                self._keep_in_memory(line)
        self._update_gauges()
        if self._pending + len(self._in_memory) >= self._batch_size:
            self._wake.set()

    def _keep_in_memory(self, line: bytes) -> None:
        if len(self._in_memory) >= _MAX_RECORDS_IN_MEMORY:
            self._metrics.write_errors.inc()
            logger.error("ledger journal unwritable and memory full: a record is lost")
            return
        self._in_memory.append(line)

    def _retry_journaling(self, journal: JournalFile) -> bool:
        """Move the records kept in memory back to the journal, once it takes them again."""
        while self._in_memory:
            try:
                journal.append(self._in_memory[0])
            except OSError:
                return False
            self._in_memory.popleft()
            self._pending += 1
        logger.warning("the ledger journal is writable again")
        return True

    async def _run(self) -> None:
        await self._replay_orphans()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_seconds)
            self._wake.clear()
            await self._copy_journal()
            await self._sync_if_due()

    async def _replay_orphans(self) -> None:
        """Copy what processes that died left in their journals, then delete them."""
        own = self._journal.path if self._journal else Path()
        for path in orphaned_journals(self._directory, own):
            with claimed(path) as orphan:
                if orphan is None:
                    continue  # its process is alive
                lines = _readable(orphan.read_lines(0, max_lines=1 << 62, max_bytes=orphan.size()))
                self._orphaned = len(lines)
                self._update_gauges()
                for start in range(0, len(lines), self._batch_size):
                    await self._write_until_stored(lines[start : start + self._batch_size])
                    self._orphaned -= len(lines[start : start + self._batch_size])
                    self._update_gauges()
                orphan.truncate()
                logger.info("replayed %d records left in %s", len(lines), path.name)

    async def _copy_journal(self) -> None:
        journal = self._journal
        assert journal is not None
        if self._in_memory:
            self._retry_journaling(journal)
        # Copy what is there now, not what arrives meanwhile: chasing the tail would write a
        # batch of one or two records per round trip for as long as calls keep coming.
        end = journal.size()
        while self._written_offset < end:
            lines = journal.read_lines(
                self._written_offset, self._batch_size, end - self._written_offset
            )
            if not lines:
                break
            if not await self._write(lines):
                return
            self._written_offset += sum(len(line) for line in lines)
            self._pending -= len(lines)
            self._update_gauges()
        # No await from here on, so no record is appended while the journal is cut down.
        if self._written_offset == journal.size() and self._written_offset > 0:
            journal.truncate()  # everything is in the database: start afresh
            self._written_offset = 0
        elif self._written_offset >= _ROTATE_JOURNAL_BYTES:
            self._rotate(journal)
        await self._copy_memory()

    async def _copy_memory(self) -> None:
        """Store what the journal could not take straight from memory, rather than wait for
        the disk: it is safe only once in the database."""
        while self._in_memory:
            # Taken out while stored, so that a journal writable again meanwhile (`publish`
            # moves what is in memory to it) does not take them too.
            lines = [
                self._in_memory.popleft()
                for _ in range(min(self._batch_size, len(self._in_memory)))
            ]
            if not await self._write(lines):
                self._in_memory.extendleft(reversed(lines))
                return
            self._update_gauges()

    def _rotate(self, journal: JournalFile) -> None:
        """Under steady load the journal is never all written at once; move its unwritten tail
        to a new file so that it does not grow without end. Until the old file is gone, a crash
        leaves the tail in both, which the replay stores once."""
        successor = None
        try:
            tail = journal.read_tail(self._written_offset)
            successor = JournalFile.create(self._directory)
            successor.append(tail)
            successor.sync()
        except OSError as error:
            if successor is not None:
                successor.close(delete=True)
            logger.warning("cannot rotate the ledger journal, it keeps growing: %s", error)
            return
        journal.close(delete=True)
        self._journal = successor
        self._written_offset = 0

    async def _write_until_stored(self, lines: list[bytes]) -> None:
        while not await self._write(lines):
            pass  # _write has waited out its backoff

    async def _write(self, lines: list[bytes]) -> bool:
        """Store the lines' records; False, after a backoff pause that doubles with each
        failure in a row (up to 5 s), when the database failed."""
        if not lines:
            return True
        try:
            await self._store.write_lines(lines)
        except RejectedBatch as error:
            return await self._write_around_refused(lines, error)
        except DATABASE_ERRORS as error:
            self._metrics.write_errors.inc()
            if not self._backoff:
                logger.error("ledger database write failed, records stay journaled: %s", error)
            doubled = max(self._backoff * 2, _FIRST_BACKOFF_SECONDS)
            self._backoff = min(doubled, _LONGEST_BACKOFF_SECONDS)
            self._update_gauges()
            await asyncio.sleep(self._backoff)
            return False
        if self._backoff:
            logger.warning("ledger database reachable again: replaying journaled records")
        self._backoff = 0.0
        self._on_stored([request_id_of(line) for line in lines])
        return True

    async def _write_around_refused(self, lines: list[bytes], error: RejectedBatch) -> bool:
        """Store a refused batch in halves, down to the records refused on their own, which are
        set aside: one bad record must not hold back every record after it."""
        if len(lines) > 1:
            middle = len(lines) // 2
            return await self._write(lines[:middle]) and await self._write(lines[middle:])
        self._metrics.write_errors.inc()
        try:
            path = set_aside(self._directory, lines[0])
        except OSError as disk_error:
            logger.error(
                "the database refused a record (%s) and it cannot be set aside (%s): %r",
                error,
                disk_error,
                lines[0],
            )
        else:
            logger.error("the database refused a record (%s): set aside in %s", error, path)
        # The ledger is done with it: the budgets stop holding its spend as on its way.
        self._on_stored([request_id_of(lines[0])])
        return True

    async def _sync_if_due(self) -> None:
        journal = self._journal
        if journal is None or not self._unsynced:
            return
        if time.monotonic() - self._last_sync >= self._fsync_seconds:
            self._unsynced = False
            self._last_sync = time.monotonic()
            try:
                await asyncio.to_thread(journal.sync)
            except OSError as error:
                self._unsynced = True
                self._metrics.write_errors.inc()
                logger.error("cannot fsync the ledger journal, retrying: %s", error)

    def _update_gauges(self) -> None:
        waiting = self._pending + len(self._in_memory)
        self._metrics.queue.set(waiting + self._orphaned)
        self._metrics.spooled.set((waiting if self._backoff else 0) + self._orphaned)

    async def stop(self, drain_seconds: float) -> None:
        """Copy what is left to the database (for up to `drain_seconds`), close the journal.

        What the database did not take stays in the journal file, replayed at the next start.
        """
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        journal = self._journal
        if journal is None:
            return
        try:
            await asyncio.wait_for(self._drain(), drain_seconds)
        except TimeoutError:
            logger.warning(
                "ledger: %d records left in the journal for the next start", self._pending
            )
        try:
            journal.sync()
        except OSError as error:
            logger.error("cannot fsync the ledger journal at shutdown: %s", error)
        if self._in_memory:
            logger.error(
                "ledger: %d records lost, neither journaled nor stored", len(self._in_memory)
            )
        journal.close(delete=self._pending == 0 and not self._in_memory)
        self._journal = None

    async def _drain(self) -> None:
        while self._pending or self._in_memory:
            await self._copy_journal()


def _readable(lines: list[bytes]) -> list[bytes]:
    """The lines of a dead process's journal that are whole records (it may have died midway
    through one)."""
    readable = []
    for line in lines:
        try:
            decode(line)
        except ValueError:
            logger.error("skipping an unreadable journal line (%d bytes)", len(line))
        else:
            readable.append(line)
    return readable
