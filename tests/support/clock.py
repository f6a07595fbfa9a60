"""A wall clock tests set by hand (the proxy reads it from its server thread)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

# Where the clock of tests that set it by hand starts.
START = datetime(2026, 11, 25, 12, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> None:
        with self._lock:
            self._now += timedelta(**delta)

    def set(self, now: datetime) -> None:
        with self._lock:
            self._now = now
