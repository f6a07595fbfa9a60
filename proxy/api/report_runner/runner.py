"""Runs `/usage/*` reports in the reports process, a few at a time, each within its deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec

from proxy.api.report_runner.messages import WorkerConfig
from proxy.api.report_runner.process import ReportProcess
from proxy.api.report_runner.slots import ReportsBusy, ReportSlots
from proxy.api.report_runner.worker import ReportLedger
from proxy.errors import Refused
from proxy.settings import ReportConfig

P = ParamSpec("P")

# A report cancelled at its deadline that has not stopped this much later is ended by killing
# the reports process (pure-Python work between two awaits cannot be cancelled).
KILL_GRACE_SECONDS = 5.0


class ReportTimedOut(Refused):
    status = 504
    code = "report_timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The report did not end within {seconds:g} seconds, so it was stopped: ask for a "
            "shorter window or fewer groups."
        )


class ReportRunner:
    """The reports of one worker: bounded, run away from its event loop, stopped at deadline."""

    def __init__(
        self,
        config: ReportConfig,
        worker: WorkerConfig,
        kill_grace_seconds: float = KILL_GRACE_SECONDS,
    ) -> None:
        self._slots = ReportSlots(config.max_running, config.max_waiting, config.max_per_team)
        self._process = ReportProcess(worker)
        self._timeout_seconds = config.timeout_seconds
        self._kill_grace_seconds = kill_grace_seconds

    async def run(
        self,
        team: str | None,
        report: Callable[Concatenate[ReportLedger, P], Awaitable[bytes]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> bytes:
        """`report(ledger, *args, **kwargs)` in the reports process, on `team`'s account (None:
        the admin key's); its JSON document. Cancelling this stops the report there."""
        try:
            async with asyncio.timeout(self._timeout_seconds):
                slot = await self._slots.acquire(team)
        except TimeoutError:
            raise ReportsBusy() from None
        try:
            running = await self._process.start(
                report, args, kwargs, self._timeout_seconds + self._kill_grace_seconds
            )
        except BaseException:
            slot.release()
            raise
        # The place stays taken until the process is done with the report, not just its caller.
        running.ended.add_done_callback(lambda _: slot.release())
        try:
            async with asyncio.timeout(self._timeout_seconds):
                return await running.document()
        except TimeoutError:
            raise ReportTimedOut(self._timeout_seconds) from None
        finally:
            running.cancel()

    async def stop(self) -> None:
        """Stop the reports process (its reports end as unavailable)."""
        await self._process.stop()
