"""A local receiver of alert webhooks (and Slack messages), raw ASGI on a real uvicorn.

It records every request's path, headers and exact body bytes, and answers `failure_status` to
the first `fail_first` requests, then `status` to the rest. Safe to wait on from any thread or
event loop: the proxy under test may run in another thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from tests.support.asgi import Receive, Scope, Send, read_body
from tests.support.servers import serve_in_thread


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    answered: int  # the status the receiver answered

    @property
    def accepted(self) -> bool:
        return 200 <= self.answered < 300

    def json(self) -> Any:
        return orjson.loads(self.body)


class AlertReceiver:
    def __init__(self, status: int = 200, fail_first: int = 0, failure_status: int = 500) -> None:
        self._changed = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self.answer(status, fail_first, failure_status)

    def answer(self, status: int = 200, fail_first: int = 0, failure_status: int = 500) -> None:
        """From now on: `failure_status` to the next `fail_first` requests, then `status`."""
        with self._changed:
            self._status = status
            self._failures_left = fail_first
            self._failure_status = failure_status

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request so far, answered or refused, in arrival order."""
        with self._changed:
            return list(self._requests)

    @property
    def accepted(self) -> list[ReceivedRequest]:
        return [request for request in self.requests if request.accepted]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """The first `count` accepted requests, blocking (not from the sender's event loop)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: self._accepted_count() >= count, timeout)
        assert arrived, f"expected {count} accepted requests, got {self._accepted_count()}"
        return self.accepted[:count]

    async def received(self, count: int, seconds: float = 10.0) -> list[ReceivedRequest]:
        """The first `count` accepted requests, waiting without blocking the event loop."""
        deadline = time.monotonic() + seconds
        while self._accepted_count() < count:
            assert time.monotonic() < deadline, (
                f"expected {count} accepted requests, got {self._accepted_count()}"
            )
            await asyncio.sleep(0.01)
        return self.accepted[:count]

    def _accepted_count(self) -> int:
        with self._changed:
            return sum(1 for request in self._requests if request.accepted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        with self._changed:
            if self._failures_left > 0:
                self._failures_left -= 1
                status = self._failure_status
            else:
                status = self._status
            self._requests.append(
                ReceivedRequest(
                    path=scope["path"],
                    headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
                    body=body,
                    answered=status,
                )
            )
            self._changed.notify_all()
        answer = b"ok" if 200 <= status < 300 else b"refused"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"%d" % len(answer)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@contextmanager
def serve_alert_receiver(
    receiver: AlertReceiver | None = None,
) -> Iterator[tuple[AlertReceiver, str]]:
    """Serve a receiver until the block ends; yields it and its URL (path `/alerts`)."""
    receiver = receiver or AlertReceiver()
    with serve_in_thread(receiver) as base_url:
        yield receiver, f"{base_url}/alerts"
