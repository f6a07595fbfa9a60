"""The warning that a model has no known price: once per model, and bounded, since model names
come from clients and upstreams, and a flood of made-up names must cost neither memory nor log.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from proxy.log_throttle import LogThrottle

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
        self._clock = clock
        self._warned: OrderedDict[str, None] = OrderedDict()
        self._throttle = LogThrottle(max_per_minute, _MINUTE)

    def note(self, model: str) -> None:
        """A call of this model was recorded without a price."""
        if model in self._warned:
            self._warned.move_to_end(model)
            return
        self._warned[model] = None
        if len(self._warned) > self._max_remembered:
            self._warned.popitem(last=False)
        unnamed = self._throttle.admit(self._clock())
        if unnamed is None:
            return
        if unnamed:
            logger.warning(
                "%d more models with no known price in the last minute (not named, to bound the "
                "log): their calls are recorded unpriced",
                unnamed,
            )
        logger.warning("no known price for model %r: its calls are recorded unpriced", model)

    @property
    def remembered(self) -> int:
        return len(self._warned)
