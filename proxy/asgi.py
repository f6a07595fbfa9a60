"""The client's side of one ASGI HTTP exchange: its body, its hang-up, and plain answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from proxy.errors import BodyTooLarge, ProxyError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]


class ClientDisconnected(Exception):
    """The client hung up."""


class ClientChannel:
    """Reads the client's body once, then notices the moment the client hangs up."""

    __slots__ = ("_body_done", "_receive", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._body_done = asyncio.Event()
        self.disconnected = False

    async def read_body(self, limit: int, declared_length: int | None) -> bytes:
        """The whole body; `BodyTooLarge` past `limit` bytes (before reading, if declared)."""
        if declared_length is not None and declared_length > limit:
            raise BodyTooLarge(limit)
        chunks = []
        size = 0
        async for chunk in self.stream_body():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def stream_body(self) -> AsyncIterator[bytes]:
        """The body's chunks as the client sends them."""
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self.disconnected = True
                    raise ClientDisconnected()
                chunk: bytes = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return
        finally:
            self._body_done.set()

    async def wait_for_disconnect(self) -> None:
        """Return when the client hangs up (call it once the body has been read)."""
        await self._body_done.wait()
        while not self.disconnected:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True


def content_length(headers: RawHeaders) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def header_value(headers: RawHeaders, wanted: bytes) -> bytes:
    return next((value for name, value in headers if name == wanted), b"")


async def send_error(send: Send, error: ProxyError, extra_headers: RawHeaders) -> None:
    """Answer with the proxy's own OpenAI-shaped error."""
    body = error.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
