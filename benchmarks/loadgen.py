"""A small HTTP/1.1 load generator for what wrk cannot measure: streams and a fixed rate.

It keeps connections alive, parses answers with httptools, and times each call twice: to its
first body byte (for a stream, the first event) and to its last. Two modes:
- closed loop: `concurrency` callers, each sending its next call when the last one ended;
- open loop (`--rate`): calls start on a fixed schedule whatever the answers do, and each call's
  latency counts from its scheduled start, so a stall shows in the percentiles instead of
  silently slowing the schedule (no coordinated omission).

Run: `python -m benchmarks.loadgen URL --body-file F --concurrency 16 --seconds 10`; it prints
one JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import uvloop

from benchmarks.stats import percentiles

MAX_OPEN_LOOP_CONNECTIONS = 1024


@dataclass(frozen=True)
class Answer:
    status: int
    first_byte_seconds: float
    total_seconds: float


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `call` sends a request and waits for its whole answer."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[int] | None = None
        self._first_byte_at = 0.0
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if not self._first_byte_at:
            self._first_byte_at = time.perf_counter()

    def on_message_complete(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(self._parser.get_status_code())

    def _fail(self, error: BaseException) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    async def call(self, request: bytes, started_at: float) -> Answer:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._first_byte_at = 0.0
        self._transport.write(request)
        status = await self._answer
        ended_at = time.perf_counter()
        first_byte_at = self._first_byte_at or ended_at
        if not self._parser.should_keep_alive():
            self.close()
        return Answer(status, first_byte_at - started_at, ended_at - started_at)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


@dataclass
class Tally:
    """What a run saw; `summary()` turns it into the JSON the benchmark reads."""

    first_bytes: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, answer: Answer) -> None:
        self.statuses[answer.status] += 1
        if 200 <= answer.status < 300:
            self.first_bytes.append(answer.first_byte_seconds)
            self.totals.append(answer.total_seconds)

    def summary(self, seconds: float) -> dict[str, Any]:
        calls = sum(self.statuses.values())
        return {
            "calls": calls,
            "ok_calls": len(self.totals),
            "seconds": seconds,
            "calls_per_second": calls / seconds if seconds else 0.0,
            "statuses": {str(status): count for status, count in self.statuses.items()},
            "errors": dict(self.errors),
            "latency_ms": percentiles(self.totals),
            "first_byte_ms": percentiles(self.first_bytes),
        }


class Target:
    """Where calls go, and the request bytes sent for each call."""

    def __init__(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        lines = [
            f"POST {parts.path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection


async def _call(target: Target, connection: _Connection, started_at: float, tally: Tally) -> bool:
    """One call, tallied; False when the connection is no longer usable."""
    try:
        tally.add(await connection.call(target.request, started_at))
    except (OSError, httptools.HttpParserError) as error:
        tally.errors[type(error).__name__] += 1
        connection.close()
        return False
    return not connection.closed


async def closed_loop(target: Target, concurrency: int, seconds: float, calls: int | None) -> Tally:
    """`concurrency` callers for `seconds`, or until `calls` calls were made."""
    tally = Tally()
    deadline = time.perf_counter() + seconds
    budget = [calls if calls is not None else -1]

    async def caller() -> None:
        connection = await target.connect()
        while time.perf_counter() < deadline and budget[0] != 0:
            budget[0] -= 1
            if not await _call(target, connection, time.perf_counter(), tally):
                connection = await target.connect()
        connection.close()

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return tally


async def run_on_schedule(
    rate: float,
    seconds: float,
    max_open: int,
    call: Callable[[int, float], Coroutine[Any, Any, None]],
) -> int:
    """Start `call(index, due)` `rate` times a second for `seconds`, on schedule whatever the
    answers do, and wait for all; return how many were not started because `max_open` ran."""
    running: set[asyncio.Task[None]] = set()
    overloaded = 0
    start = time.perf_counter()
    for index in range(int(rate * seconds)):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(running) >= max_open:
            overloaded += 1
            continue
        task = asyncio.create_task(call(index, due))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    return overloaded


async def open_loop(target: Target, rate: float, seconds: float) -> Tally:
    """Calls started `rate` times a second, on schedule, each on an idle connection."""
    tally = Tally()
    idle: list[_Connection] = []

    async def scheduled(started_at: float) -> None:
        connection = idle.pop() if idle else await target.connect()
        if await _call(target, connection, started_at, tally):
            idle.append(connection)

    overloaded = await run_on_schedule(
        rate, seconds, MAX_OPEN_LOOP_CONNECTIONS, lambda index, due: scheduled(due)
    )
    if overloaded:
        tally.errors["overloaded"] += overloaded
    for connection in idle:
        connection.close()
    return tally


async def run(arguments: argparse.Namespace, body: bytes) -> dict[str, Any]:
    headers = dict(header.split(":", 1) for header in arguments.header)
    target = Target(arguments.url, body, {name: value.strip() for name, value in headers.items()})
    if arguments.warmup:
        await closed_loop(target, arguments.concurrency, arguments.warmup, None)
    started = time.perf_counter()
    if arguments.rate:
        tally = await open_loop(target, arguments.rate, arguments.seconds)
    else:
        tally = await closed_loop(target, arguments.concurrency, arguments.seconds, arguments.calls)
    return tally.summary(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--calls", type=int, help="stop after this many calls (closed loop)")
    parser.add_argument("--rate", type=float, help="open loop: calls started per second")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds, not measured")
    arguments = parser.parse_args()
    body = Path(arguments.body_file).read_bytes()
    print(json.dumps(uvloop.run(run(arguments, body))))


if __name__ == "__main__":
    main()
