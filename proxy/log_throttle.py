"""A bound on how often one kind of warning is logged: what peers trigger at will (a made-up
model name, an implausible usage report, a connection past the cap) must not flood the log."""

from __future__ import annotations


class LogThrottle:
    """Lets at most `per_interval` lines through in each `interval_seconds` (a window starts
    with the first line let through after the last one ended), and counts the ones held back."""

    __slots__ = ("_held_back", "_interval", "_let_through", "_per_interval", "_window_started")

    def __init__(self, per_interval: int = 1, interval_seconds: float = 60.0) -> None:
        self._per_interval = per_interval
        self._interval = interval_seconds
        self._window_started = float("-inf")
        self._let_through = 0
        self._held_back = 0

    def admit(self, now: float) -> int | None:
        """None: stay silent. Otherwise log now: the number is how many lines were held back
        since the last window's end (0 within a window)."""
        if now - self._window_started >= self._interval:
            held_back, self._held_back = self._held_back, 0
            self._window_started, self._let_through = now, 1
            return held_back
        if self._let_through < self._per_interval:
            self._let_through += 1
            return 0
        self._held_back += 1
        return None
