"""A tap on the relayed answer: it keeps what metering needs without delaying a byte.

JSON answers are kept (up to a cap) and parsed once, after the last byte went out. Event streams
are cut into events; only events that carry usage are parsed. When the proxy itself asked the
upstream for stream usage, the tap also takes out what that added (the usage-only chunk and the
`"usage":null` in every chunk), so the client gets the bytes it would have got without the proxy.
"""

from __future__ import annotations

import re
import time
import zlib
from typing import Any, Protocol

import orjson

from proxy.metering.sse import EventSplitter, event_data

MAX_KEPT_BODY_BYTES = 32 * 1024 * 1024
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_DECODERS = {
    b"gzip": 16 + zlib.MAX_WBITS,
    b"x-gzip": 16 + zlib.MAX_WBITS,
    b"deflate": zlib.MAX_WBITS,
}
_UNPARSED = object()
# The encodings the tap can read; the others are not asked of upstreams on metered calls.
READABLE_ENCODINGS = frozenset(_DECODERS) | {b"identity"}


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
        "_decoder",
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
        "usage_events",
    )

    def __init__(self, strip_added_usage: bool) -> None:
        self._strip_added_usage = strip_added_usage
        self._splitter: EventSplitter | None = None
        self._decoder: Any = None
        self._kept: list[bytes] = []
        self._kept_bytes = 0
        self._parsed_body: Any = _UNPARSED
        self.status = 0
        self.first_byte_at: float | None = None
        self.is_event_stream = False
        self.overflowed = False
        self.events: list[bytes] = []  # the data of every event, for counting when none had usage
        self.usage_events: list[bytes] = []  # the data of the events that carry a usage object

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
        self._decoder = content_decoder(headers)
        self.is_event_stream = content_type.startswith(b"text/event-stream")
        if self.is_event_stream:
            self._splitter = EventSplitter()
        if self._rewrites:
            # Rewritten bodies have another length; the relay sends them chunked.
            return [(name, value) for name, value in headers if name.lower() != b"content-length"]
        return headers

    @property
    def _rewrites(self) -> bool:
        return self._strip_added_usage and self.is_event_stream and self._decoder is None

    def feed(self, chunk: bytes) -> bytes:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        if self._splitter is None:
            self._keep(chunk)
            return chunk
        events = self._splitter.feed(self._decode(chunk))
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
        body = b"".join(self._kept)
        try:
            if self._decoder is not None:
                body = self._decoder.decompress(body) + self._decoder.flush()
            return orjson.loads(body)
        except (orjson.JSONDecodeError, zlib.error):
            return None

    def _keep(self, chunk: bytes) -> None:
        if self.overflowed:
            return
        self._kept_bytes += len(chunk)
        if self._kept_bytes > MAX_KEPT_BODY_BYTES:
            self.overflowed = True
            self._kept = []
        else:
            self._kept.append(chunk)

    def _decode(self, chunk: bytes) -> bytes:
        if self._decoder is None:
            return chunk
        try:
            decoded: bytes = self._decoder.decompress(chunk)
        except zlib.error:
            self._decoder = None  # not what the header said: stop reading, keep relaying
            return b""
        return decoded

    def _observe(self, events: list[bytes]) -> None:
        for event in events:
            data = event_data(event)
            if not data or data == b"[DONE]":
                continue
            self._kept_bytes += len(data)
            if self._kept_bytes <= MAX_KEPT_BODY_BYTES:
                self.events.append(data)  # kept for counting only, so a bounded prefix will do
            if _USAGE_OBJECT.search(data):
                self.usage_events.append(data)

    def _observe_and_strip(self, event: bytes) -> bytes:
        self._observe([event])
        if b'"usage"' not in event:
            return event
        if _USAGE_OBJECT.search(event) and _EMPTY_CHOICES.search(event):
            return b""  # the usage-only chunk the client did not ask for
        return _USAGE_NULL.sub(b"", event, count=1)


def content_decoder(headers: list[tuple[bytes, bytes]]) -> Any:
    """A zlib decompressor for the answer's `Content-Encoding`, or None (identity, or unknown)."""
    encoding = _header(headers, b"content-encoding").strip().lower()
    return zlib.decompressobj(_DECODERS[encoding]) if encoding in _DECODERS else None


def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> bytes:
    return next((value for name, value in headers if name.lower() == wanted), b"")


def parse_event(data: bytes) -> Any:
    """An event's JSON data, or None when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
