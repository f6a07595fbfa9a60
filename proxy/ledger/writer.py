"""The ledger sink: a settled record goes to the journal at once, and to the database in batches.

The request path only appends a line to the journal (and wakes the writer when a batch is
ready). A background task copies whole lines from the journal to the database, a batch per
transaction, and truncates the journal once the database has everything. When the database
fails, the task backs off and retries the same lines, in order; nothing waits on it and nothing is
dropped. If the journal itself cannot be written (a full disk), records are kept in memory until
it can, and readiness says so. Another task fsyncs the journal every `fsync_seconds`, whatever
the database is doing, and puts the journal back if its file was deleted or replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    # Of those, the ones on disk waiting on a failed database, or left by a dead process.
    spooled: Gauge
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
        # The journal's file was deleted or replaced and no new one could be made: what it
        # takes is still read back for the database, but is on no disk a restart would see.
        self._journal_lost = False
        self._backoff = 0.0  # seconds to wait after the last failed write; 0 while healthy
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def journal_trouble(self) -> str | None:
        """Why settled records are not safe in the journal right now; None while they are."""
        if self._journal_lost:
            return "the journal file was deleted or replaced and cannot be made again"
        if self._in_memory:
            return "records are held in memory"
        return None

    def start(self) -> None:
        """Open this process's journal and start copying to the database."""
        self._journal = JournalFile.create(self._directory)
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._keep_on_disk())]

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
            # Still right if the journal moved to a new file meanwhile: the new file starts
            # where `_written_offset` stood, with these lines.
            self._written_offset += sum(len(line) for line in lines)
            self._pending -= len(lines)
            self._update_gauges()
            if self._journal is not journal:
                return  # the next round goes on from the new file
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
        try:
            self._move_to_new_file(journal)
        except OSError as error:
            logger.warning("cannot rotate the ledger journal, it keeps growing: %s", error)

    def _move_to_new_file(self, journal: JournalFile) -> JournalFile:
        """Go on in a new file holding what `journal` has that is not yet in the database."""
        successor = journal.successor(self._written_offset)
        journal.close(delete=True)
        self._journal = successor
        self._written_offset = 0
        self._journal_lost = False
        self._update_gauges()
        return successor

    async def _keep_on_disk(self) -> None:
        """Every `fsync_seconds`, even while a database write hangs or backs off: put the journal
        back if its file is gone, then fsync it."""
        while True:
            await asyncio.sleep(self._fsync_seconds)
            self._restore_journal()
            await self._sync()

    def _restore_journal(self) -> None:
        """If the journal's file was deleted or replaced, rewrite what it holds that is not yet
        in the database (its descriptor still reads it) to a new file: records only in a file
        without a name are lost with the process. Two stats, no more, while it is in place."""
        journal = self._journal
        if journal is None or journal.in_place():
            return
        try:
            successor = self._move_to_new_file(journal)
        except OSError as error:
            if not self._journal_lost:
                logger.error(
                    "the ledger journal %s was deleted or replaced and cannot be made again (%s):"
                    " records reach the database but no disk (a crash loses them), /readyz"
                    " answers 503; retrying every %g s",
                    journal.path,
                    error,
                    self._fsync_seconds,
                )
                self._journal_lost = True
                self._update_gauges()
            return
        logger.warning(
            "the ledger journal %s was deleted or replaced: its %d records not yet in the"
            " database are rewritten to %s",
            journal.path,
            self._pending,
            successor.path,
        )

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

    async def _sync(self) -> None:
        journal = self._journal
        if journal is None or not self._unsynced:
            return
        self._unsynced = False
        try:
            await asyncio.to_thread(journal.sync)
        except OSError as error:
            if journal is not self._journal:
                return  # rotated meanwhile: its new file was fsynced whole
            self._unsynced = True
            self._metrics.write_errors.inc()
            logger.error("cannot fsync the ledger journal, retrying: %s", error)

    def _update_gauges(self) -> None:
        self._metrics.queue.set(self._pending + len(self._in_memory) + self._orphaned)
        # Spooled are records a restart would find on disk: not those held in memory, nor
        # those in a journal file that no longer has a name.
        on_disk = 0 if self._journal_lost else self._pending
        self._metrics.spooled.set((on_disk if self._backoff else 0) + self._orphaned)

    async def stop(self, drain_seconds: float) -> None:
        """Copy what is left to the database (for up to `drain_seconds`), close the journal.

        What the database did not take stays in the journal file, replayed at the next start.
        """
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._journal is None:
            return
        try:
            await asyncio.wait_for(self._drain(), drain_seconds)
        except TimeoutError:
            logger.warning(
                "ledger: %d records left in the journal for the next start", self._pending
            )
        self._restore_journal()  # what is left must be in a file the next start finds
        journal = self._journal
        assert journal is not None
        try:
            journal.sync()
        except OSError as error:
            logger.error("cannot fsync the ledger journal at shutdown: %s", error)
        lost = len(self._in_memory) + (self._pending if self._journal_lost else 0)
        if lost:
            logger.error("ledger: %d records lost, neither journaled nor stored", lost)
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
