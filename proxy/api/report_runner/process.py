"""The proxy's side of its reports process: started with the first report, started again after
it died or was killed, stopped with the app."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from proxy.api.report_runner.messages import (
    Cancel,
    Ended,
    Failure,
    Ready,
    Report,
    Start,
    WorkerConfig,
)
from proxy.errors import ProxyError

logger = logging.getLogger(__name__)

# How long the reports process has to exit once told to, before it is killed.
_EXIT_SECONDS = 5.0
# How long it may take to start (imports, mostly: about a second).
_START_SECONDS = 30.0


class ReportsUnavailable(ProxyError):
    status = 503
    code = "reports_unavailable"

    def __init__(self) -> None:
        super().__init__("The reports process stopped before the report ended; try again.")

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"1")]


@dataclass(frozen=True, slots=True)
class RunningReport:
    """A report sent to the reports process; `ended` resolves when the process is done with it."""

    link: _Link
    job: int
    ended: asyncio.Future[Ended]

    async def document(self) -> bytes:
        """The report's JSON document; its error raised as the report raised it."""
        ended = await asyncio.shield(self.ended)
        if ended.failure is not None:
            raise ended.failure.error()
        if ended.document is None:  # cancelled in the process, though not by this caller
            raise ReportsUnavailable()
        return ended.document

    def cancel(self) -> None:
        """Ask the reports process to stop it (nothing once it ended)."""
        if not self.ended.done():
            self.link.send(Cancel(self.job))


class ReportProcess:
    """The reports process of this worker, and the reports it runs."""

    def __init__(self, config: WorkerConfig) -> None:
        self._config = config
        self._link: _Link | None = None
        self._jobs = itertools.count()

    async def start(
        self, report: Report, args: tuple[Any, ...], kwargs: Mapping[str, Any], kill_after: float
    ) -> RunningReport:
        """Send the report to the process, once it has started; if the report has not ended
        `kill_after` seconds later, the process is killed: a report that does not stop when
        cancelled ends that way."""
        if self._link is None or self._link.lost:
            self._link = _Link(self._config)
        link = self._link
        try:
            await asyncio.wait_for(asyncio.shield(link.ready), _START_SECONDS)
        except TimeoutError:
            logger.error("the reports process did not start in %g seconds", _START_SECONDS)
            link.kill()
            raise ReportsUnavailable() from None
        if link.lost:
            raise ReportsUnavailable()
        return link.start(Start(next(self._jobs), report, args, dict(kwargs)), kill_after)

    async def stop(self) -> None:
        """Close the pipe, so that the process cancels its reports, disposes of its engine and
        exits; killed if it takes longer than a few seconds."""
        if self._link is not None:
            await self._link.stop()


class _Link:
    """One reports process, its pipes, and the reports it has not ended yet."""

    def __init__(self, config: WorkerConfig) -> None:
        self._loop = asyncio.get_running_loop()
        child_inbox, to_child = os.pipe()
        from_child, child_outbox = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __package__, str(child_inbox), str(child_outbox)],
                pass_fds=(child_inbox, child_outbox),
                stdin=subprocess.DEVNULL,
            )
        except OSError as error:
            for descriptor in (to_child, from_child):
                os.close(descriptor)
            logger.error("cannot start the reports process: %s", error)
            raise ReportsUnavailable() from error
        finally:
            os.close(child_inbox)  # the child's ends: the child has its own copies
            os.close(child_outbox)
        self._outbox = Connection(to_child, readable=False)
        self._inbox = Connection(from_child, writable=False)
        self._endings: dict[int, asyncio.Future[Ended]] = {}
        self._watchdogs: dict[int, asyncio.TimerHandle] = {}
        self.ready: asyncio.Future[None] = self._loop.create_future()  # done when lost, too
        self.lost = False
        self.send(config)
        self._reader = threading.Thread(target=self._read, name="reports-outbox", daemon=True)
        self._reader.start()

    def start(self, start: Start, kill_after: float) -> RunningReport:
        ended: asyncio.Future[Ended] = self._loop.create_future()
        self._endings[start.job] = ended
        self._watchdogs[start.job] = self._loop.call_later(kill_after, self._kill_for, start.job)
        self.send(start)
        return RunningReport(self, start.job, ended)

    def send(self, message: object) -> None:
        """A message to the process; one gone already fails the reports it had (the reader says
        so too, once it reads the end of the pipe)."""
        if self.lost:
            return
        try:
            self._outbox.send(message)
        except OSError:
            self._lose()

    async def stop(self) -> None:
        self._outbox.close()
        try:
            await asyncio.to_thread(self._process.wait, _EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("the reports process did not exit when told to: killed")
            self._process.kill()
        await asyncio.to_thread(self._reader.join)
        self._lose()

    def _read(self) -> None:
        # A thread of its own: a document is read as it comes, never by a blocking read on the loop.
        try:
            while True:
                message = self._inbox.recv()
                self._to_loop(self._received, message)
        except (EOFError, OSError):
            pass
        finally:
            self._inbox.close()
            try:
                self._process.wait(_EXIT_SECONDS)  # it closed its end: it is exiting
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._to_loop(self._lose)

    def _to_loop(self, callback: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _received(self, message: Ready | Ended) -> None:
        if isinstance(message, Ready):
            if not self.ready.done():
                self.ready.set_result(None)
            return
        self._ended(message)

    def _ended(self, ended: Ended) -> None:
        watchdog = self._watchdogs.pop(ended.job, None)
        if watchdog is not None:
            watchdog.cancel()
        future = self._endings.pop(ended.job, None)
        if future is not None and not future.done():
            future.set_result(ended)

    def _kill_for(self, job: int) -> None:
        logger.warning("a report did not stop past its deadline: the reports process is killed")
        self._watchdogs.pop(job, None)
        self.kill()

    def kill(self) -> None:
        """End the process at once; its reports end as unavailable."""
        self._process.kill()
        self._lose()

    def _lose(self) -> None:
        """The process is gone, or going: every report it had ends as unavailable."""
        if not self.lost:
            self.lost = True
            with contextlib.suppress(OSError):
                self._outbox.close()
        if not self.ready.done():
            self.ready.set_result(None)
        for watchdog in self._watchdogs.values():
            watchdog.cancel()
        self._watchdogs.clear()
        # A result, not an exception: a caller that left would never retrieve it.
        unavailable = Failure.of(ReportsUnavailable())
        for job, future in self._endings.items():
            if not future.done():
                future.set_result(Ended(job, failure=unavailable))
        self._endings.clear()
