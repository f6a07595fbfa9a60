"""Server-sent events, split from the byte stream with as little work as possible."""

from __future__ import annotations

import re

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(rb"\r\n|\n|\r")
# An event end is at most 4 bytes (`\r\n\r\n`): so many bytes before a chunk may begin one.
_STRADDLE = 3
# The largest event kept whole. Real events are far smaller except those that carry a whole
# output: a Responses `response.completed` (about a MiB for a long answer) or an image in base64
# (a few MiB for a large PNG, several in one `response.completed` from the image tool).
MAX_EVENT_BYTES = 16 * 1024 * 1024


class Unread(bytes):
    """Bytes of an event too large to keep: relayed as they came, never read."""

    __slots__ = ()


class EventSplitter:
    """Cuts a byte stream into whole events (each with its blank line), keeping what is partial.

    Each byte is searched for an event end once, however many chunks an event comes in. An event
    that grows past `max_event_bytes` is let go of: its bytes are handed on as `Unread` pieces,
    up to its end.
    """

    __slots__ = ("_max_event_bytes", "_pending", "_skipping", "_tail")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        self._pending = bytearray()  # the start of an event whose end is still to come
        self._skipping = False  # inside an event too large to keep
        self._tail = b""  # while skipping: the last bytes handed on, where an end may begin

    def feed(self, chunk: bytes) -> list[bytes]:
        """The whole events (and `Unread` pieces) this chunk completes, in stream order."""
        events: list[bytes] = []
        if self._skipping or self._pending:
            tail = self._tail if self._skipping else bytes(self._pending[-_STRADDLE:])
            end = _end_after(tail, chunk)
            if end < 0:
                self._continue_event(chunk, events)
                return events
            self._end_event(chunk[:end], events)
            chunk = chunk[end:]
        start = 0
        for match in _EVENT_END.finditer(chunk):
            end = match.end()
            events.append(chunk[start:end])
            start = end
        if start < len(chunk):
            self._continue_event(chunk[start:], events)
        return events

    def rest(self) -> bytes:
        """Whatever the stream ended with that was not a whole event."""
        rest = bytes(self._pending)
        self._pending.clear()
        return rest

    def _continue_event(self, part: bytes, events: list[bytes]) -> None:
        """Keep a part of an event that has not ended, unless the event is too large to keep."""
        if self._skipping:
            events.append(Unread(part))
            self._tail = (self._tail + part[-_STRADDLE:])[-_STRADDLE:]
            return
        self._pending += part
        if len(self._pending) > self._max_event_bytes:
            self._tail = bytes(self._pending[-_STRADDLE:])
            events.append(Unread(self._pending))
            self._pending.clear()
            self._skipping = True

    def _end_event(self, last_part: bytes, events: list[bytes]) -> None:
        if self._skipping:
            events.append(Unread(last_part))
            self._skipping, self._tail = False, b""
        else:
            events.append(bytes(self._pending) + last_part)
            self._pending.clear()


def _end_after(tail: bytes, chunk: bytes) -> int:
    """Where in `chunk` the event that `tail` ends ends (just past its blank line), or -1.

    No end lies wholly in `tail`, so one that begins there ends in the first bytes of `chunk`.
    """
    straddling = _EVENT_END.search(tail + chunk[:_STRADDLE])
    if straddling is not None:
        return straddling.end() - len(tail)
    within = _EVENT_END.search(chunk)
    return -1 if within is None else within.end()


def event_data(event: bytes) -> bytes:
    """The event's `data:` lines joined by newlines, as the SSE specification says."""
    if event.startswith(b"data: ") and b"\n" not in event[6:].rstrip(b"\r\n"):
        return event[6:].rstrip(b"\r\n")  # the one-line event every OpenAI stream is made of
    lines = []
    for line in _LINE_END.split(event):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines)
