"""Server-sent events, split from the byte stream with as little work as possible."""

from __future__ import annotations

import re

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(rb"\r\n|\n|\r")


class EventSplitter:
    """Cuts a byte stream into whole events (each with its blank line), keeping what is partial."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk if self._pending else chunk
        events = []
        start = 0
        for match in _EVENT_END.finditer(data):
            events.append(data[start : match.end()])
            start = match.end()
        self._pending = data[start:]
        return events

    def rest(self) -> bytes:
        """Whatever the stream ended with that was not a whole event."""
        rest, self._pending = self._pending, b""
        return rest


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
