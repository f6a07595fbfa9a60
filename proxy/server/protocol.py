"""uvicorn's HTTP protocol (httptools) with deadlines on what the client sends, and a cap.

uvicorn itself lets a connection hold a half-sent request for ever (slowloris), and accepts
connections until the process runs out of file descriptors. Here:
- a request's headers must end `header_timeout_seconds` after the connection opened, or after
  the previous answer on it ended; past that the connection is closed (with a 408 if part of a
  request came);
- while the app waits on a body, `body_timeout_seconds` of silence mark it stalled: the app is
  told through the scope (`proxy.asgi.BODY_STALLED`) and woken, so that `/v1` answers a 408 and
  records the call; whatever does not answer in `_ANSWER_GRACE_SECONDS` gets the 408 from here;
- a request's line and headers may take `max_header_bytes` (httptools keeps whatever comes): past
  that the connection gets a 431 and is closed;
- past the cap (`ClientConnections`) a connection gets a 503 at once and is closed, before its
  request is read.

Each connection has one timer, re-armed lazily: moving from one phase to the next only moves a
deadline (an attribute), and the timer, when it fires before the deadline in force, sets itself
for that deadline. So there is no timer work per request or per chunk: a busy keep-alive
connection sees its timer fire about once per header timeout.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.asgi import BODY_STALLED
from proxy.errors import HeadersTooLarge, ProxyError, RequestTimeout, TooManyConnections
from proxy.log_throttle import LogThrottle
from proxy.settings import ServerConfig

logger = logging.getLogger(__name__)

# How long the app, told that a body stalled, has to answer before the connection is closed.
_ANSWER_GRACE_SECONDS = 1.0
_REFUSAL_WARNING_SECONDS = 60.0
# How long a connection answered while its client was still sending is kept open, dropping what
# comes, before it is closed.
_LINGER_SECONDS = 1.0


def _raw_answer(error: ProxyError) -> bytes:
    """`error` as a whole HTTP/1.1 answer, for a connection no ASGI app answers on."""
    body = error.body()
    status = http.HTTPStatus(error.status)
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{name.decode()}: {value.decode()}" for name, value in error.headers()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_HEADERS_TIMED_OUT = _raw_answer(RequestTimeout("The request's headers did not arrive in time."))
_BODY_TIMED_OUT = _raw_answer(RequestTimeout("The request body stopped arriving."))
_TOO_MANY_CONNECTIONS = _raw_answer(TooManyConnections())
_HEADERS_TOO_LARGE = _raw_answer(HeadersTooLarge("The request's headers are too large."))


# What a connection waits for. Plain module constants, compared by identity: the checks run in
# every request's callbacks, where an enum's attribute access would cost more than the check.
_HEADERS = "a request's headers, the client's to send by the deadline"
_BODY = "a body the app waits on, whose chunks the client must keep sending"
_ANSWERING = "nothing from the client: the app answers"
_GIVING_UP = "the app's answer to a body it was told stalled"
_DISCARDING = "nothing more: what the client still sends is dropped until the connection closes"


class ClientProtocol(HttpToolsProtocol):
    """One client connection, whose client has deadlines for its headers and its body."""

    def __init__(
        self,
        connections: ClientConnections,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._cap = connections
        self._header_seconds = connections.server.header_timeout_seconds
        self._body_seconds = connections.server.body_timeout_seconds
        self._max_header_bytes = connections.server.max_header_bytes
        # Bytes received since the current request's headers began (an upper bound: the chunk
        # that ends them may carry body bytes too, so it is checked only if they did not end).
        self._header_bytes = 0
        self._phase = _HEADERS
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # The scope of the last request whose headers ended: another one in `self.scope` means
        # that part of a next request came.
        self._headed_scope: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Checked here, not when uvicorn makes the protocol: it makes the protocols of a burst of
        # accepted connections before any is counted in `connections`.
        if len(self.connections) >= self._cap.max_connections:
            # Answered before the request is read, and closed: Linux keeps the answer readable
            # for the client even if its request then meets a reset.
            self.transport = transport  # never in `connections`, nothing else to undo
            transport.write(_TOO_MANY_CONNECTIONS)
            transport.close()
            self._cap.refused()
            return
        super().connection_made(transport)
        self._enter(_HEADERS, self._header_seconds)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase is _DISCARDING:
            return
        if phase is not _HEADERS:
            super().data_received(data)
            return
        self._header_bytes += len(data)
        super().data_received(data)
        if self._phase is _HEADERS and self._header_bytes > self._max_header_bytes:
            self._answer_and_linger(_HEADERS_TOO_LARGE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _ANSWERING
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._headed_scope = self.scope
        self._enter(_BODY, self._body_seconds)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self._phase is _BODY:
            self._deadline = self.loop.time() + self._body_seconds

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Unless a pipelined request came after it, the client's next request is awaited.
        if self.cycle.response_complete and not self.transport.is_closing():
            self._enter(_HEADERS, self._header_seconds)

    def handle_websocket_upgrade(self) -> None:
        # The connection becomes a WebSocket session, which the app times itself.
        self._phase = _ANSWERING
        super().handle_websocket_upgrade()

    def _enter(self, phase: str, seconds: float) -> None:
        self._phase = phase
        self._header_bytes = 0
        self._deadline = self.loop.time() + seconds
        if self._timer is None or self._deadline < self._timer_at:
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(self._deadline, self._on_timer)
        self._timer_at = self._deadline

    def _on_timer(self) -> None:
        self._timer = None
        phase = self._phase
        if phase is _BODY and not self.cycle.more_body:
            self._phase = phase = _ANSWERING  # the body came whole
        if phase is _ANSWERING:
            return
        if phase is _DISCARDING:
            self.transport.close()
            return
        now = self.loop.time()
        if self.flow.read_paused and phase is not _GIVING_UP:
            # The proxy stopped reading (the app has not taken what came): not the client's time.
            self._deadline = now + (self._body_seconds if phase is _BODY else self._header_seconds)
        if now < self._deadline:
            self._arm()
        elif phase is _HEADERS:
            self._close(_HEADERS_TIMED_OUT if self.scope is not self._headed_scope else b"")
        elif phase is _BODY:
            self._tell_app_the_body_stalled()
        elif not self.cycle.response_started:
            self._close(_BODY_TIMED_OUT)
        else:
            self._phase = _ANSWERING

    def _tell_app_the_body_stalled(self) -> None:
        cycle = self.cycle
        if cycle.response_started:
            # The app answers without waiting for the rest of the body.
            self._phase = _ANSWERING
            return
        cycle.scope[BODY_STALLED] = self._body_seconds  # type: ignore[literal-required]
        cycle.message_event.set()  # its pending `receive()` returns, with no more body
        self._enter(_GIVING_UP, _ANSWER_GRACE_SECONDS)

    def _answer_and_linger(self, answer: bytes) -> None:
        """Answer a client that is still sending, then drop what it sends for a moment before
        closing: closing with its bytes unread would reset the connection, and the reset can
        destroy the answer before the client reads it."""
        self.transport.write(answer)
        self.transport.write_eof()
        self._enter(_DISCARDING, _LINGER_SECONDS)

    def _close(self, answer: bytes) -> None:
        if answer:
            self.transport.write(answer)
        self.transport.close()


class ClientConnections:
    """Makes the protocol of each accepted connection; past `max_connections` (the cap) the
    connection is answered 503 at once and closed.

    uvicorn calls this where it would call a protocol class (`Config(http=...)`). It pickles, so
    each worker process of `serve --workers N` gets a copy and caps its own connections: the
    file descriptors the cap protects are the process's, and the kernel spreads connections over
    the workers unevenly, so a share of the cap would refuse calls in one worker while another
    has room.
    """

    def __init__(self, server: ServerConfig, max_connections: int) -> None:
        self.server = server
        self.max_connections = max_connections
        self._refusal_warnings = LogThrottle(1, _REFUSAL_WARNING_SECONDS)

    def __call__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> ClientProtocol:
        return ClientProtocol(self, config, server_state, app_state, _loop)

    def refused(self) -> None:
        """A connection was refused: say so in the log, once a minute at most."""
        if self._refusal_warnings.admit(time.monotonic()) is not None:
            logger.warning(
                "refusing new connections with 503: this process holds %d, its cap "
                "(server.max_connections, or what its fd limit holds)",
                self.max_connections,
            )
