"""The client's side of one ASGI HTTP exchange: its body, its hang-up, and plain answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from proxy.errors import BodyTooLarge, ProxyError, RequestTimeout

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]


# Set in the scope by the server (proxy/server/protocol.py), to the seconds of silence it allowed,
# when the client's body stopped arriving; the pending `receive()` then returns with no body.
BODY_STALLED = "metering.body_stalled"


class ClientDisconnected(Exception):
    """The client hung up."""


class ClientChannel:
    """Reads the client's body once, then notices the moment the client hangs up."""

    __slots__ = ("_body_done", "_receive", "_scope", "disconnected")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._scope = scope
        self._receive = receive
        self._body_done = asyncio.Event()
        self.disconnected = False

    async def read_body(self, limit: int, declared_length: int | None, within: float) -> bytes:
        """The whole body; `BodyTooLarge` past `limit` bytes (before reading, if declared), and
        `RequestTimeout` unless it is all in `within` seconds after its first chunk."""
        if declared_length is not None and declared_length > limit:
            raise BodyTooLarge(limit)
        try:
            body, more = await self._next_chunk()
            if more:
                body = await self._rest_of_body(body, limit, within)
        finally:
            self._body_done.set()
        if len(body) > limit:
            raise BodyTooLarge(limit)
        return body

    async def _rest_of_body(self, first: bytes, limit: int, within: float) -> bytes:
        # Only a body that did not come whole with the headers is timed, by the loop's clock.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        chunks = [first]
        size = len(first)
        more = True
        while more:
            chunk, more = await self._next_chunk()
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            if more and loop.time() > deadline:
                raise RequestTimeout(
                    f"The request body did not arrive within {within:g} seconds of its start."
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def stream_body(self) -> AsyncIterator[bytes]:
        """The body's chunks as the client sends them."""
        try:
            more = True
            while more:
                chunk, more = await self._next_chunk()
                if chunk:
                    yield chunk
        finally:
            self._body_done.set()

    async def _next_chunk(self) -> tuple[bytes, bool]:
        """The body's next chunk, and whether more follow."""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
            raise ClientDisconnected()
        more: bool = message.get("more_body", False)
        if more and BODY_STALLED in self._scope:
            raise RequestTimeout(
                f"No part of the request body arrived for {self._scope[BODY_STALLED]:g} seconds."
            )
        return message.get("body", b""), more

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
