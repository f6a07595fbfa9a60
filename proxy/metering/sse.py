"""Server-sent events, split from the byte stream with as little work as possible."""

from __future__ import annotations

import re

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(rb"\r\n|\n|\r")
# An event end is at most 4 bytes (`\r\n\r\n`): so many bytes before new ones may begin one.
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

    Each byte is scanned once, however many chunks an event comes in. An event that grows past
    `max_event_bytes` is let go of: its bytes are handed on as `Unread` pieces, up to its end.
    """

    __slots__ = ("_max_event_bytes", "_pending", "_skipping", "_tail")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        self._pending = bytearray()
        self._skipping = False  # inside an event too large to keep
        self._tail = b""  # while skipping: the last bytes handed on, where an end may begin

    def feed(self, chunk: bytes) -> list[bytes]:
        """The whole events (and `Unread` pieces) this chunk completes, in stream order."""
        pieces: list[bytes] = []
        if self._skipping:
            end = self._end_of_skipped(chunk)
            if end < 0:
                return [Unread(chunk)]
            pieces.append(Unread(chunk[:end]))
            chunk = chunk[end:]
        if self._pending:
            data: bytes | bytearray = self._pending
            scan_from = max(0, len(self._pending) - _STRADDLE)  # the rest was scanned before
            self._pending += chunk
        else:
            data, scan_from = chunk, 0
        start = 0
        for match in _EVENT_END.finditer(data, scan_from):
            pieces.append(bytes(data[start : match.end()]))
            start = match.end()
        if data is self._pending:
            del self._pending[:start]
        else:
            self._pending = bytearray(chunk[start:])
        if len(self._pending) > self._max_event_bytes:
            self._tail = bytes(self._pending[-_STRADDLE:])
            pieces.append(Unread(self._pending))
            self._pending = bytearray()
            self._skipping = True
        return pieces

    def rest(self) -> bytes:
        """Whatever the stream ended with that was not a whole event."""
        rest, self._pending = bytes(self._pending), bytearray()
        return rest

    def _end_of_skipped(self, chunk: bytes) -> int:
        """Where in `chunk` the skipped event ends (just after its blank line), or -1."""
        tail = self._tail
        match = _EVENT_END.search(tail + chunk)
        if match is None:
            self._tail = (tail + chunk[-_STRADDLE:])[-_STRADDLE:]
            return -1
        self._skipping, self._tail = False, b""
        return match.end() - len(tail)


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
