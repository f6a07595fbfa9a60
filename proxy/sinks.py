"""Where settled records go: metrics, traces, and (later) the ledger and budgets.

A sink takes a record synchronously and must not block: anything slow (the database) sits
behind a queue of its own. A sink that fails is logged and counted; the client never notices.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from prometheus_client import Counter

from proxy.metering.usage import UsageRecord

logger = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    def publish(self, record: UsageRecord) -> None: ...


class Publisher:
    """Hands each settled record to every sink, in order."""

    def __init__(self, sinks: Sequence[Sink], errors: Counter) -> None:
        self._sinks = tuple(sinks)
        self._errors = errors

    def publish(self, record: UsageRecord) -> None:
        for sink in self._sinks:
            try:
                sink.publish(record)
            except Exception:  # a failing sink must never break a client's response
                logger.exception("sink %s failed on record %s", sink.name, record.request_id)
                self._errors.labels(sink.name).inc()
