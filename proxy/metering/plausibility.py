"""Whether an upstream's usage report can be true; only a report that can be is metered.

A count that is negative, not a whole number, or far beyond what any one call consumes, or a part
larger than its whole (cached tokens above the input, reasoning above the output), cannot be
true: the whole report is set aside and the call is metered by the estimate, flagged `estimated`.
So no upstream can make a call cost less than nothing, and pay a team's budget back, or a fortune.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

from proxy.clock import Clock
from proxy.log_throttle import LogThrottle
from proxy.metering.usage import Usage
from proxy.request_fields import MAX_CHOICES

logger = logging.getLogger(__name__)

# Ten times the largest context window of any model (10M tokens): far above any one call.
MAX_TOKENS_PER_CALL = 100_000_000
# A call asks for at most `n` images, and `n` is at most MAX_CHOICES (OpenAI's own cap is 10).
MAX_IMAGES_PER_CALL = MAX_CHOICES
# A week of audio: far longer than any file the audio endpoints take (25 MB).
MAX_AUDIO_SECONDS_PER_CALL = Decimal(7 * 24 * 60 * 60)
# How often an upstream's implausible reports are warned of: a hostile one sends them every call.
WARNING_INTERVAL = timedelta(minutes=1)

# Each part of a count, and the count it is part of (OpenAI's convention: see Usage).
_WHOLE_OF = {
    "cached input tokens": "input tokens",
    "audio input tokens": "input tokens",
    "image input tokens": "input tokens",
    "reasoning tokens": "output tokens",
    "audio output tokens": "output tokens",
    "accepted prediction tokens": "output tokens",
    "rejected prediction tokens": "output tokens",
}


class ImplausibleUsage(ValueError):
    """A usage report that cannot be true; the message says what in it cannot be."""


def plausible(usage: Usage) -> Usage:
    """The reported `usage` itself, or `ImplausibleUsage` if it cannot be true."""
    counts = {
        "input tokens": usage.input_tokens,
        "cached input tokens": usage.cached_input_tokens,
        "audio input tokens": usage.audio_input_tokens,
        "image input tokens": usage.image_input_tokens,
        "output tokens": usage.output_tokens,
        "reasoning tokens": usage.reasoning_tokens,
        "audio output tokens": usage.audio_output_tokens,
        "accepted prediction tokens": usage.accepted_prediction_tokens,
        "rejected prediction tokens": usage.rejected_prediction_tokens,
    }
    for name, count in counts.items():
        if not 0 <= count <= MAX_TOKENS_PER_CALL:
            raise ImplausibleUsage(f"{count} {name}")
    for part, whole in _WHOLE_OF.items():
        if counts[part] > counts[whole]:
            raise ImplausibleUsage(f"{counts[part]} {part} of {counts[whole]} {whole}")
    if not 0 <= usage.images <= MAX_IMAGES_PER_CALL:
        raise ImplausibleUsage(f"{usage.images} images")
    seconds = usage.audio_seconds
    if not seconds.is_finite() or not 0 <= seconds <= MAX_AUDIO_SECONDS_PER_CALL:
        raise ImplausibleUsage(f"{seconds} seconds of audio")
    return usage


def whole_number(value: object, name: str) -> int:
    """A reported count: absent (None) is 0; anything but a whole number is `ImplausibleUsage`."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ImplausibleUsage(f"{name} is {value!r:.40}, not a whole number")
    return value


def seconds(value: object, name: str) -> Decimal:
    """A reported duration: absent (None) is 0; anything but a number is `ImplausibleUsage`."""
    if value is None:
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ImplausibleUsage(f"{name} is {value!r:.40}, not a number of seconds")
    return Decimal(str(value))


class ImplausibleReports:
    """Warns of implausible reports at most once per `WARNING_INTERVAL` for each upstream (the
    upstreams are the configured few), saying how many more came in between."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._throttles: dict[str, LogThrottle] = {}

    def warn(self, upstream: str, model: str, error: ImplausibleUsage) -> None:
        """Note one implausible report; log it unless this upstream's last warning is recent."""
        throttle = self._throttles.get(upstream)
        if throttle is None:
            throttle = self._throttles[upstream] = LogThrottle(1, WARNING_INTERVAL.total_seconds())
        more = throttle.admit(self._clock().timestamp())
        if more is None:
            return
        logger.warning(
            "upstream %r reported usage that cannot be true for model %.100r (%s): the call "
            "is metered by its estimate%s",
            upstream,
            model,
            error,
            f"; {more} more such reports since the last warning" if more else "",
        )
