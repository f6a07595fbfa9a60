"""The reports process: its own event loop and ledger engine, running the reports the proxy sends
until the proxy closes the pipe (or dies)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.api.report_runner.messages import Cancel, Ended, Failure, Ready, Start, WorkerConfig
from proxy.errors import DatabaseUnavailable, ProxyError
from proxy.ledger.database import DATABASE_ERRORS, create_ledger_engine
from proxy.ledger.whatif import WhatIf
from proxy.pricing.catalog import PriceCatalog

logger = logging.getLogger(__name__)

# Calls first: on a machine with fewer free cores than busy processes, the scheduler gives the
# reports what the proxy's workers leave.
NICENESS = 10


@dataclass(frozen=True, slots=True)
class ReportLedger:
    """What a report reads: the ledger, and the repricer of what-ifs."""

    engine: AsyncEngine
    what_if: WhatIf


def open_ledger(config: WorkerConfig) -> ReportLedger:
    """An engine of this process's own loop (an asyncpg engine is bound to the loop it runs on)."""
    engine = create_ledger_engine(config.database_url, config.statement_timeout_seconds)
    return ReportLedger(engine, WhatIf(engine, PriceCatalog(config.prices), config.upstreams))


def main() -> None:
    """Entry point: `python -m proxy.api.report_runner IN_FD OUT_FD`."""
    # Stopped by the proxy closing the pipe, never by a signal meant for the proxy (Ctrl-C
    # reaches the whole process group; some supervisors signal every process of a service).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(NICENESS)
    inbox = Connection(int(sys.argv[1]), writable=False)
    outbox = Connection(int(sys.argv[2]), readable=False)
    config: WorkerConfig = inbox.recv()
    ledger = open_ledger(config)
    outbox.send(Ready())
    asyncio.run(_serve(ledger, inbox, outbox))


async def _serve(ledger: ReportLedger, inbox: Connection, outbox: Connection) -> None:
    loop = asyncio.get_running_loop()
    messages: asyncio.Queue[Start | Cancel | None] = asyncio.Queue()

    def read() -> None:
        # A blocking read of its own, so that a report busy on the loop still gets its Cancel as
        # soon as it next awaits.
        try:
            while True:
                loop.call_soon_threadsafe(messages.put_nowait, inbox.recv())
        except (EOFError, OSError):
            loop.call_soon_threadsafe(messages.put_nowait, None)

    threading.Thread(target=read, name="reports-inbox", daemon=True).start()
    jobs: dict[int, asyncio.Task[Ended]] = {}

    def answer(job: int, task: asyncio.Task[Ended]) -> None:
        del jobs[job]
        ended = Ended(job) if task.cancelled() else task.result()
        with contextlib.suppress(OSError):  # the proxy is gone: the inbox ends too
            outbox.send(ended)

    try:
        while (message := await messages.get()) is not None:
            if isinstance(message, Start):
                task = asyncio.create_task(_run(ledger, message))
                jobs[message.job] = task
                task.add_done_callback(functools.partial(answer, message.job))
            elif message.job in jobs:
                jobs[message.job].cancel()
    finally:
        for task in jobs.values():
            task.cancel()
        await asyncio.gather(*jobs.values(), return_exceptions=True)
        await ledger.engine.dispose()


async def _run(ledger: ReportLedger, start: Start) -> Ended:
    try:
        document = await start.report(ledger, *start.args, **start.kwargs)
    except ProxyError as error:
        return Ended(start.job, failure=Failure.of(error))
    except DATABASE_ERRORS as error:
        logger.warning("a report failed: the database failed: %s", error)
        return Ended(start.job, failure=Failure.of(DatabaseUnavailable(_LEDGER_UNAVAILABLE)))
    except Exception:
        logger.exception("a report failed")
        return Ended(start.job, failure=Failure.of(ProxyError(_UNEXPECTED)))
    return Ended(start.job, document=document)


_LEDGER_UNAVAILABLE = "The ledger database is unavailable."
_UNEXPECTED = "The proxy failed unexpectedly; its log says why."
