"""The warning that a model has no known price: once per model, and bounded, since model names
come from clients and upstreams, and a flood of made-up names must cost neither memory nor log.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

logger = logging.getLogger(__name__)

MAX_REMEMBERED_MODELS = 1_000
MAX_WARNINGS_PER_MINUTE = 10
_MINUTE = 60.0


class UnpricedModelWarnings:
    """Warns of each unpriced model once (while remembered), at most so many warnings a minute;
    past that, one line a minute counts the models it did not name."""

    def __init__(
        self,
        max_remembered: int = MAX_REMEMBERED_MODELS,
        max_per_minute: int = MAX_WARNINGS_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_remembered = max_remembered
        self._max_per_minute = max_per_minute
        self._clock = clock
        self._warned: OrderedDict[str, None] = OrderedDict()
        self._minute_started = float("-inf")
        self._warned_this_minute = 0
        self._unnamed_this_minute = 0

    def note(self, model: str) -> None:
        """A call of this model was recorded without a price."""
        if model in self._warned:
            self._warned.move_to_end(model)
            return
        self._warned[model] = None
        if len(self._warned) > self._max_remembered:
            self._warned.popitem(last=False)
        self._start_minute_if_over(self._clock())
        if self._warned_this_minute < self._max_per_minute:
            self._warned_this_minute += 1
            logger.warning("no known price for model %r: its calls are recorded unpriced", model)
        else:
            self._unnamed_this_minute += 1

    @property
    def remembered(self) -> int:
        return len(self._warned)

    def _start_minute_if_over(self, now: float) -> None:
        if now - self._minute_started < _MINUTE:
            return
        if self._unnamed_this_minute:
            logger.warning(
                "%d more models with no known price in the last minute (not named, to bound the "
                "log): their calls are recorded unpriced",
                self._unnamed_this_minute,
            )
        self._minute_started = now
        self._warned_this_minute = 0
        self._unnamed_this_minute = 0
