"""The log throttle: so many lines a window, and a count of those held back."""

from __future__ import annotations

from proxy.log_throttle import LogThrottle


def test_lines_past_the_window_s_share_are_held_back_and_counted_in_the_next_window() -> None:
    throttle = LogThrottle(per_interval=2, interval_seconds=60)

    assert [throttle.admit(now) for now in (0, 1, 2, 3)] == [0, 0, None, None]
    assert throttle.admit(60) == 2  # a new window: log, and say two were held back
    assert throttle.admit(61) == 0


def test_a_window_starts_with_the_first_line_after_the_last_one_ended() -> None:
    throttle = LogThrottle(per_interval=1, interval_seconds=60)

    assert throttle.admit(0) == 0
    assert throttle.admit(100) == 0
    assert throttle.admit(159) is None  # within the window that began at 100
    assert throttle.admit(160) == 1
