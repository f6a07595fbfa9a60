"""Batch API calls: each request of a batch created through the proxy is metered at batch price.

The proxy notes the batches it sees created (`POST /v1/batches`, answered with the batch) and,
as they are polled (`GET /v1/batches/{id}`), their output files. When such an output file is read
through the proxy, every line (one request of the batch, with its usage) becomes a record for the
team that created the batch. Each line is metered once per process (a cut read can be retried) and
its record's id is the line's own `batch_req_*` id, so a ledger stores each once in any case.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from proxy.endpoints import BATCH_PATH, FILE_CONTENT_PATH, MODEL_ROUTED_ENDPOINTS
from proxy.metering.exchange import Exchange
from proxy.metering.inflate import Inflater, content_inflater
from proxy.metering.tap import MAX_KEPT_BODY_BYTES, ResponseTap, Tap
from proxy.upstream.routing import Upstream

_Entry = TypeVar("_Entry")


@dataclass(frozen=True, slots=True)
class TrackedBatch:
    batch_id: str
    team: str
    path: str  # the endpoint of its requests, relative to /v1/, e.g. "chat/completions"
    family: str


# OpenAI's Batch API takes at most 50,000 requests a batch: past twice that, a file's line ids
# are no longer remembered (the ledger still stores each line once, by its id).
MAX_LINES_REMEMBERED_PER_FILE = 100_000


class BatchRegistry:
    """The batches created through this process, and the output files that belong to them.

    Every id here comes from an upstream's answers, so each collection is bounded: the oldest
    entries are forgotten first.
    """

    def __init__(self, max_batches: int = 100_000) -> None:
        self._max_batches = max_batches
        self._batches: OrderedDict[str, TrackedBatch] = OrderedDict()
        self._by_output_file: OrderedDict[str, TrackedBatch] = OrderedDict()
        self._metered_files: OrderedDict[str, None] = OrderedDict()
        self._lines_seen: OrderedDict[str, set[str]] = OrderedDict()

    @staticmethod
    def answers_about_batches(method: str, path: str) -> bool:
        """Whether a call's answer is a batch object worth reading."""
        return method in ("GET", "POST") and BATCH_PATH.fullmatch(path) is not None

    def observe(self, team: str, created: bool, document: Any) -> None:
        """Take a batch object the upstream answered with."""
        if not isinstance(document, dict) or document.get("object") != "batch":
            return
        batch_id, endpoint = document.get("id"), document.get("endpoint")
        if not isinstance(batch_id, str) or not isinstance(endpoint, str):
            return
        batch = self._batches.get(batch_id)
        if batch is None and created:
            path = endpoint.removeprefix("/v1/").lstrip("/")
            routed = MODEL_ROUTED_ENDPOINTS.get(path)
            batch = TrackedBatch(batch_id, team, path, routed.family if routed else "other")
            self._remember(self._batches, batch_id, batch)
        output_file = document.get("output_file_id")
        if batch is not None and isinstance(output_file, str):
            self._remember(self._by_output_file, output_file, batch)

    def output_file_to_meter(self, method: str, path: str) -> tuple[str, TrackedBatch] | None:
        """(file id, batch) when this call reads a tracked batch's output file not yet metered."""
        match = FILE_CONTENT_PATH.fullmatch(path) if method == "GET" else None
        if match is None:
            return None
        file_id = match.group(1)
        batch = self._by_output_file.get(file_id)
        if batch is None or file_id in self._metered_files:
            return None
        return file_id, batch

    def first_time(self, file_id: str, line_id: str) -> bool:
        """Whether this line of the file is met for the first time (a cut read may be retried)."""
        seen = self._lines_seen.get(file_id)
        if seen is None:
            seen = set()
            self._remember(self._lines_seen, file_id, seen)
        if line_id in seen:
            return False
        if len(seen) < MAX_LINES_REMEMBERED_PER_FILE:
            seen.add(line_id)
        return True

    def file_metered(self, file_id: str) -> None:
        """The whole file was read: it will not be metered again."""
        self._remember(self._metered_files, file_id, None)
        self._lines_seen.pop(file_id, None)

    def _remember(self, entries: OrderedDict[str, _Entry], key: str, value: _Entry) -> None:
        entries[key] = value
        if len(entries) > self._max_batches:
            entries.popitem(last=False)


class BatchOutputTap:
    """Reads a batch output file (JSON lines) as it is relayed, handing on each parsed line.

    A file may be far larger than any answer, so it is inflated piece by piece without a limit
    in all; one line is kept up to `MAX_KEPT_BODY_BYTES`, and a longer one is skipped unread.
    """

    __slots__ = (
        "_inflater",
        "_on_complete",
        "_on_line",
        "_pending",
        "_pending_bytes",
        "_skipping",
        "first_byte_at",
        "status",
    )

    def __init__(
        self, on_line: Callable[[dict[str, Any]], None], on_complete: Callable[[], None]
    ) -> None:
        self._on_line = on_line
        self._on_complete = on_complete
        self._pending: list[bytes] = []  # the start of the line still coming
        self._pending_bytes = 0
        self._skipping = False  # inside a line too long to keep, until its end
        self._inflater: Inflater | None = None
        self.first_byte_at: float | None = None
        self.status = 0

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        self.status = status
        self._inflater = content_inflater(headers, limit=None)
        return headers

    def feed(self, chunk: bytes) -> bytes:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        if self.status == 200:
            for piece in (chunk,) if self._inflater is None else self._inflater.inflate(chunk):
                self._split(piece)
        return chunk

    def _split(self, data: bytes) -> None:
        """Read the lines `data` ends; only its own bytes are searched for a line's end."""
        end = data.find(b"\n")
        if end < 0:
            if not self._skipping:
                self._pending.append(data)
                self._pending_bytes += len(data)
                if self._pending_bytes > MAX_KEPT_BODY_BYTES:
                    self._pending, self._pending_bytes, self._skipping = [], 0, True
            return
        lines = data[end + 1 :].split(b"\n")
        if not self._skipping:
            self._read([b"".join([*self._pending, data[:end]])])
        rest = lines.pop()
        self._read(lines)
        self._pending, self._pending_bytes, self._skipping = [rest], len(rest), False

    def finish(self) -> bytes:
        if not self._skipping:
            self._read([b"".join(self._pending)])
        self._pending, self._pending_bytes = [], 0
        if self.status == 200:
            self._on_complete()
        return b""

    def _read(self, lines: list[bytes]) -> None:
        for line in lines:
            if not line.strip():
                continue
            try:
                document = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(document, dict):
                self._on_line(document)


MeterLine = Callable[[TrackedBatch, Upstream, dict[str, Any]], object]


class BatchMetering:
    """Hooks the registry into `/v1/*` calls: which answers to tap, and what to note after."""

    def __init__(self, registry: BatchRegistry, meter_line: MeterLine) -> None:
        self._registry = registry
        self._meter_line = meter_line

    def tap_for(self, method: str, path: str, upstream: Upstream) -> Tap | None:
        """A tap for a pass-through call whose answer matters to batch metering, else None."""
        if BatchRegistry.answers_about_batches(method, path):
            return ResponseTap(strip_added_usage=False)
        to_meter = self._registry.output_file_to_meter(method, path)
        if to_meter is None:
            return None
        file_id, batch = to_meter

        def meter(line: dict[str, Any]) -> None:
            line_id = line.get("id")
            if isinstance(line_id, str) and self._registry.first_time(file_id, line_id):
                self._meter_line(batch, upstream, line)

        return BatchOutputTap(meter, lambda: self._registry.file_metered(file_id))

    def note_answer(self, exchange: Exchange) -> None:
        """After a call about batches: note the batch, and its output file once it has one."""
        if exchange.family == "batches" and exchange.succeeded:
            tap = exchange.tap
            if isinstance(tap, ResponseTap):
                created = exchange.path == "batches"  # POST /v1/batches answers the new batch
                self._registry.observe(exchange.caller.team, created, tap.json_body())
