"""Reports for the report runner's tests: run in the reports process, which imports this module
by name (the tests' working directory is the repository's root)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from proxy.api.report_runner.worker import ReportLedger
from proxy.ledger.reports.filters import ReportError


async def process_id(ledger: ReportLedger) -> bytes:
    """The id of the process that runs reports."""
    return str(os.getpid()).encode()


async def refuse(ledger: ReportLedger, message: str) -> bytes:
    raise ReportError(message, param="group_by")


async def fail(ledger: ReportLedger) -> bytes:
    raise RuntimeError("a bug in a report")


async def wait_for_cancel(ledger: ReportLedger, directory: str) -> bytes:
    """Waits until cancelled; says that it started, then that it was cancelled, by files named so
    in `directory`."""
    (Path(directory) / "started").touch()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        (Path(directory) / "cancelled").touch()
        raise
    return b"never"


async def hold_the_loop(ledger: ReportLedger, seconds: float, directory: str) -> bytes:
    """Pure-Python work that no cancellation can interrupt; says that it started by a file
    named so in `directory`."""
    (Path(directory) / "started").touch()
    time.sleep(seconds)  # noqa: ASYNC251 (blocking on purpose)
    return b"held"


async def exit_abruptly(ledger: ReportLedger) -> bytes:
    os._exit(1)
