"""Who may start a report now: a few run at once, a few more wait, and no team holds more than
its share; past that a caller is refused at once rather than queued."""

from __future__ import annotations

import asyncio
from collections import Counter

from proxy.errors import ProxyError

# Seconds: reports end in seconds, and the OpenAI SDKs back off further on each retry.
RETRY_AFTER_SECONDS = 2


class _TryLater(ProxyError):
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]


class ReportsBusy(_TryLater):
    status = 503
    code = "reports_busy"

    def __init__(self) -> None:
        super().__init__("Too many usage reports are running or waiting; try again shortly.")


class TooManyReports(_TryLater):
    status = 429
    error_type = "requests"
    code = "too_many_reports"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This team already has {limit} usage reports running or waiting, its most at "
            "once; try again when one has ended."
        )


class Slot:
    """A report's place among the running ones, held until `release` (once)."""

    def __init__(self, slots: ReportSlots, team: str | None) -> None:
        self._slots = slots
        self._team: str | None = team
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release(self._team)


class ReportSlots:
    """Bounded running reports, a bounded queue before them, and a bound per team."""

    def __init__(self, running: int, waiting: int, per_team: int) -> None:
        self._running = asyncio.Semaphore(running)
        self._max_waiting = waiting
        self._waiting = 0
        self._per_team = per_team
        self._teams: Counter[str | None] = Counter()  # running and waiting reports, by team

    async def acquire(self, team: str | None) -> Slot:
        """A running place for `team`'s report, waited for in turn; `TooManyReports` when the
        team has its most already, `ReportsBusy` when every place and the queue are taken."""
        if self._teams[team] >= self._per_team:
            raise TooManyReports(self._per_team)
        if self._running.locked() and self._waiting >= self._max_waiting:
            raise ReportsBusy()
        self._teams[team] += 1
        self._waiting += 1  # for no time at all when a place is free
        try:
            await self._running.acquire()
        except BaseException:
            self._forget(team)
            raise
        finally:
            self._waiting -= 1
        return Slot(self, team)

    def release(self, team: str | None) -> None:
        """The report of `team` ended (use `Slot.release`)."""
        self._running.release()
        self._forget(team)

    def _forget(self, team: str | None) -> None:
        self._teams[team] -= 1
        if not self._teams[team]:
            del self._teams[team]
