"""A sink that collects settled records, for tests to wait on across threads."""

from __future__ import annotations

import threading

from proxy.metering.usage import UsageRecord


class RecordCollector:
    name = "collector"

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []
        self._changed = threading.Condition()

    def publish(self, record: UsageRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[UsageRecord]:
        """The first `count` records, once there are that many (AssertionError on timeout)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.records) >= count, timeout)
        assert arrived, f"expected {count} records, got {len(self.records)}"
        return self.records[:count]

    def only(self) -> UsageRecord:
        """The one record of a test that made one call; fails if a second one appears."""
        (record,) = self.exactly(1)
        return record

    def exactly(self, count: int) -> list[UsageRecord]:
        """The records of a test that made `count` calls; fails if one more appears."""
        records = self.wait_for(count)
        with self._changed:
            self._changed.wait_for(lambda: len(self.records) > count, timeout=0.2)
        assert len(self.records) == count, f"expected {count} records, got {len(self.records)}"
        return records
