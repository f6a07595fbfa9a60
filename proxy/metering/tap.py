"""A tap on the relayed answer: it keeps what metering needs without delaying a byte.

JSON answers are kept (up to a cap) and parsed once, after the last byte went out. Event streams
are cut into events; only events that carry usage are parsed. When the proxy itself asked the
upstream for stream usage, the tap also takes out what that added (the usage-only chunk and the
`"usage":null` in every chunk), so the client gets the bytes it would have got without the proxy.

What a peer sends is read only within bounds: a body kept or inflated past `MAX_KEPT_BODY_BYTES`,
or an event past `MAX_EVENT_BYTES`, is relayed as it came and not read, and the call's usage
falls back to an estimate unless the upstream reported it in what was read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from proxy.metering.inflate import READABLE_ENCODINGS, Inflater, content_inflater
from proxy.metering.sse import EventSplitter, Unread, event_data

# The most of one answer the tap keeps, or inflates, to read it: the JSON body, or the events.
MAX_KEPT_BODY_BYTES = 32 * 1024 * 1024
# What keeping one more event costs beyond its data (a bytes object, a list slot): counted
# against the cap, so that a stream of tiny events cannot be kept by the million.
_KEPT_EVENT_OVERHEAD = 64
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_UNPARSED = object()


class Tap(Protocol):
    """What the relay hands an answer to: `feed` returns the bytes to relay for each chunk."""

    first_byte_at: float | None

    def start(
        self, status: int, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]: ...

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class ResponseTap:
    """Observes one answer for its usage (see the module's docstring)."""

    __slots__ = (
        "_inflater",
        "_kept",
        "_kept_bytes",
        "_parsed_body",
        "_splitter",
        "_strip_added_usage",
        "events",
        "first_byte_at",
        "is_event_stream",
        "overflowed",
        "status",
        "unread_since_usage",
        "usage_events",
    )

    def __init__(self, strip_added_usage: bool) -> None:
        self._strip_added_usage = strip_added_usage
        self._splitter: EventSplitter | None = None
        self._inflater: Inflater | None = None
        self._kept: list[bytes] = []
        self._kept_bytes = 0
        self._parsed_body: Any = _UNPARSED
        self.status = 0
        self.first_byte_at: float | None = None
        self.is_event_stream = False
        # The tap stopped reading: the answer grew too large, or is not in its claimed encoding.
        self.overflowed = False
        # Part of the answer went unread after the last usage seen: a usage found may be stale.
        self.unread_since_usage = False
        self.events: list[bytes] = []  # the data of every event, for counting when none had usage
        # The data of the last event that carries a usage object: the report is the last one.
        self.usage_events: list[bytes] = []

    @classmethod
    def answered_with(cls, document: Any) -> ResponseTap:
        """A tap that saw this JSON answer: for answers read elsewhere (batch output lines)."""
        tap = cls(strip_added_usage=False)
        tap._parsed_body = document
        return tap

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Take the answer's status and headers; return the headers to relay."""
        self.status = status
        content_type = _header(headers, b"content-type")
        self._inflater = content_inflater(headers, MAX_KEPT_BODY_BYTES)
        encoding = _header(headers, b"content-encoding").strip().lower()
        if encoding and encoding not in READABLE_ENCODINGS:
            self._stop_reading()  # not asked for, and unreadable: relayed as it is
        self.is_event_stream = content_type.startswith(b"text/event-stream")
        if self.is_event_stream:
            self._splitter = EventSplitter()
        if self._rewrites:
            # Rewritten bodies have another length; the relay sends them chunked.
            return [(name, value) for name, value in headers if name.lower() != b"content-length"]
        return headers

    @property
    def _rewrites(self) -> bool:
        return (
            self._strip_added_usage
            and self.is_event_stream
            and self._inflater is None
            and not self.overflowed  # set mid-stream only where there is an inflater
        )

    def feed(self, chunk: bytes) -> bytes:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        if self._splitter is None:
            self._keep(chunk)
            return chunk
        if self.overflowed:
            return chunk
        splitter = self._splitter
        if self._inflater is None:
            events = splitter.feed(chunk)
        else:
            events = [event for piece in self._inflated(chunk) for event in splitter.feed(piece)]
        if not self._rewrites:
            self._observe(events)
            return chunk
        return b"".join(self._observe_and_strip(event) for event in events)

    def finish(self) -> bytes:
        """End of answer: what is still to relay (a partial last event, when rewriting)."""
        if self._splitter is None:
            return b""
        rest = self._splitter.rest()
        self._observe([rest] if rest.strip() else [])
        return rest if self._rewrites else b""

    def json_body(self) -> Any:
        """The parsed JSON answer, or None if it was not JSON, was too large or is unreadable."""
        if self._parsed_body is _UNPARSED:
            self._parsed_body = self._parse_body()
        return self._parsed_body

    def _parse_body(self) -> Any:
        if self.is_event_stream or self.overflowed or not self._kept:
            return None
        try:
            return orjson.loads(b"".join(self._kept))
        except orjson.JSONDecodeError:
            return None

    def _keep(self, chunk: bytes) -> None:
        for piece in (chunk,) if self._inflater is None else self._inflated(chunk):
            if self.overflowed:
                return
            self._kept_bytes += len(piece)
            if self._kept_bytes > MAX_KEPT_BODY_BYTES:
                self._stop_reading()
            else:
                self._kept.append(piece)

    def _inflated(self, chunk: bytes) -> Iterator[bytes]:
        """What an encoded chunk inflates to; nothing once the tap has stopped reading."""
        if self.overflowed or self._inflater is None:
            return
        yield from self._inflater.inflate(chunk)
        if self._inflater.stopped:
            self._stop_reading()

    def _stop_reading(self) -> None:
        self.overflowed = True
        self.unread_since_usage = True
        self._kept = []

    def _observe(self, events: list[bytes]) -> None:
        for event in events:
            if isinstance(event, Unread):
                self.unread_since_usage = True
                continue
            data = event_data(event)
            if not data or data == b"[DONE]":
                continue
            self._kept_bytes += len(data) + _KEPT_EVENT_OVERHEAD
            if self._kept_bytes <= MAX_KEPT_BODY_BYTES:
                self.events.append(data)  # kept for counting only, so a bounded prefix will do
            if _USAGE_OBJECT.search(data):
                self.usage_events = [data]
                self.unread_since_usage = False

    def _observe_and_strip(self, event: bytes) -> bytes:
        self._observe([event])
        if isinstance(event, Unread) or b'"usage"' not in event:
            return event
        if _USAGE_OBJECT.search(event) and _EMPTY_CHOICES.search(event):
            return b""  # the usage-only chunk the client did not ask for
        return _USAGE_NULL.sub(b"", event, count=1)


def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> bytes:
    return next((value for name, value in headers if name.lower() == wanted), b"")


def parse_event(data: bytes) -> Any:
    """An event's JSON data, or None when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
