"""A hostile upstream's answers through a real `serve` process: a decompression bomb, one event
larger than any real one, and usage that would pay a team back. Each is relayed as it came, costs
the proxy bounded memory and time, and settles an estimated record that never lowers a spend.
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.metering import prompt_tokens, tokens
from tests.support.admin import ADMIN_ENVIRON, Admin
from tests.support.asgi import Receive, Scope, Send, read_body
from tests.support.process import ProxyProcess
from tests.support.servers import serve_in_thread

KEY = "sk-mp-hostile-answers-0123456789abcdefghijklmnopq"
REFUNDS_KEY = "sk-mp-hostile-refunds-0123456789abcdefghijklmnop"
HI = [{"role": "user", "content": "Hi"}]
MiB = 1024 * 1024
BOMB_MIB = 400  # inflated; about 400 KiB as sent
HUGE_EVENT_BYTES = 24 * MiB
ANSWER = "Hello from a hostile upstream."
SEND_BYTES = 64 * 1024  # what the fake sends at a time of a long answer


def _gzip_bomb() -> bytes:
    """A gzip chat answer of ~400 KiB whose body inflates to 400 MiB (a JSON string of spaces).

    After a full flush deflate starts afresh, so each MiB of spaces compresses to the same bytes:
    the bomb is built by repeating them rather than by compressing 400 MiB.
    """
    prefix = b'{"id":"chatcmpl-bomb","object":"chat.completion","choices":[{"index":0,'
    prefix += b'"message":{"role":"assistant","content":"'
    suffix = b'"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":6}}'
    spaces = b" " * MiB
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(prefix + spaces) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeated = deflate.compress(spaces) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert deflate.compress(spaces) + deflate.flush(zlib.Z_FULL_FLUSH) == repeated
    last = deflate.compress(suffix) + deflate.flush()
    crc = zlib.crc32(prefix + spaces)
    for _ in range(BOMB_MIB - 1):
        crc = zlib.crc32(spaces, crc)
    crc = zlib.crc32(suffix, crc)
    size = len(prefix) + BOMB_MIB * MiB + len(suffix)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return header + first + repeated * (BOMB_MIB - 1) + last + trailer


def _chunk(delta: dict[str, Any] | None, usage: bool) -> bytes:
    document: dict[str, Any] = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    if usage:
        document["usage"] = None
    return b"data: " + orjson.dumps(document) + b"\n\n"


USAGE_CHUNK = b'data: {"id":"chatcmpl-hostile","choices":[],"usage":{"prompt_tokens":12,'
USAGE_CHUNK += b'"completion_tokens":6,"total_tokens":18}}\n\n'
DONE = b"data: [DONE]\n\n"


def _huge_event_stream(include_usage: bool) -> list[bytes]:
    """A chat stream whose second chunk is one 24 MiB `data:` line, in the pieces it is sent in."""
    huge = _chunk({"content": "x" * HUGE_EVENT_BYTES}, include_usage)
    pieces = [_chunk({"role": "assistant", "content": "Hi"}, include_usage)]
    pieces += [huge[start : start + SEND_BYTES] for start in range(0, len(huge), SEND_BYTES)]
    pieces.append(_chunk({"content": " there"}, include_usage))
    if include_usage:
        pieces.append(USAGE_CHUNK)
    pieces.append(DONE)
    return pieces


HUGE_EVENT_STREAM = _huge_event_stream(include_usage=True)
# What a client that did not ask for usage gets: the proxy asked for it and takes its additions
# out again, except from the huge event, which it relays as the upstream sent it.
REWRITTEN_HUGE_EVENT_STREAM = (
    _chunk({"role": "assistant", "content": "Hi"}, False)
    + b"".join(HUGE_EVENT_STREAM[1:-3])
    + _chunk({"content": " there"}, False)
    + DONE
)


def _answer_with_usage(usage: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-hostile",
            "object": "chat.completion",
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    )


# $1 a token for each, so that every token counts in the spend.
MODELS = ("gzip-bomb", "huge-event", "held-huge-event", "negative-usage", "fair")
FAIR_USAGE = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
NEGATIVE_USAGE = {"prompt_tokens": -1_000_000, "completion_tokens": 6, "total_tokens": -999_994}


class HostileUpstream:
    """An OpenAI-compatible upstream whose answer the request's `model` chooses: `gzip-bomb`,
    `huge-event` (streamed), `held-huge-event` (which holds the huge event's last piece until
    `release` is set), `negative-usage`; any other model is answered fairly."""

    def __init__(self) -> None:
        self.bomb = _gzip_bomb()
        self.release = threading.Event()
        self.released_in_time = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = orjson.loads(await read_body(receive))
        model = request.get("model")
        if model == "gzip-bomb":
            await self._start(send, b"application/json", [(b"content-encoding", b"gzip")])
            for start in range(0, len(self.bomb), SEND_BYTES):
                await self._body(send, self.bomb[start : start + SEND_BYTES])
            return await self._body(send, b"", more=False)
        if model in ("huge-event", "held-huge-event"):
            options = request.get("stream_options") or {}
            pieces = _huge_event_stream(options.get("include_usage", False))
            await self._start(send, b"text/event-stream")
            for number, piece in enumerate(pieces):
                if model == "held-huge-event" and number == len(pieces) - 4:  # the event's end
                    await self._held()
                await self._body(send, piece)
                await asyncio.sleep(0)  # let the other connections of this server be served
            return await self._body(send, b"", more=False)
        usage = NEGATIVE_USAGE if model == "negative-usage" else FAIR_USAGE
        await self._start(send, b"application/json")
        await self._body(send, _answer_with_usage(usage), more=False)

    async def _held(self) -> None:
        # A client that never releases it does not hold the answer forever.
        self.released_in_time = await asyncio.to_thread(self.release.wait, 10)

    @staticmethod
    async def _start(send: Send, content_type: bytes, extra: list[Any] | None = None) -> None:
        headers = [(b"content-type", content_type), *(extra or [])]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

    @staticmethod
    async def _body(send: Send, body: bytes, more: bool = True) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": more})


@pytest.fixture(scope="module")
def hostile_upstream() -> Iterator[tuple[HostileUpstream, str]]:
    upstream = HostileUpstream()
    with serve_in_thread(upstream) as url:
        yield upstream, f"{url}/v1"


@dataclass
class Proxy:
    process: ProxyProcess
    ledger: Path

    @property
    def url(self) -> str:
        return self.process.url

    def peak_memory_bytes(self) -> int:
        """The process's peak resident memory so far (VmHWM)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def record(self, request_id: str) -> dict[str, Any]:
        """The call's ledger row, once the ledger has it."""
        deadline = time.monotonic() + 10
        while True:
            with sqlite3.connect(self.ledger) as connection:
                connection.row_factory = sqlite3.Row
                row = connection.execute(
                    "SELECT * FROM usage_records WHERE request_id = ?", (request_id,)
                ).fetchone()
            if row is not None:
                return dict(row)
            assert time.monotonic() < deadline, f"no record of {request_id}"
            time.sleep(0.05)

    def spend(self, team: str) -> tuple[Decimal, int]:
        """The team's spend this period and the calls it counts."""
        document = Admin(self.url).call("GET", f"/admin/teams/{team}/spend")
        return Decimal(document["spend_usd"]), int(document["calls"])


def _start_proxy(directory: Path, upstream_url: str) -> ProxyProcess:
    """A `serve` process in front of the hostile upstream; the team `search` is on a budget,
    the team `refunds` too (for the test of negative usage alone)."""
    teams = "".join(
        f'[[teams]]\nname = "{team}"\n[[teams.keys]]\nkey_env = "{team.upper()}_KEY"\n'
        f'[teams.budget]\nperiod = "monthly"\nlimit_usd = "100000000"\nhard = false\n'
        for team in ("search", "refunds")
    )
    prices = "".join(f'[prices."{model}"]\ninput = 1000000\noutput = 1000000\n' for model in MODELS)
    config = directory / "proxy.toml"
    config.write_text(
        f'[[upstreams]]\nname = "hostile"\nbase_url = "{upstream_url}"\n{teams}{prices}'
    )
    environ = {"SEARCH_KEY": KEY, "REFUNDS_KEY": REFUNDS_KEY, **ADMIN_ENVIRON}
    process = ProxyProcess("--config", str(config), cwd=directory, environ=environ)
    process.wait_ready()
    return process


@contextmanager
def _serving(directory: Path, upstream_url: str) -> Iterator[Proxy]:
    process = _start_proxy(directory, upstream_url)
    try:
        yield Proxy(process, directory / "metering.db")
    finally:
        assert process.terminate() == 0, process.log.read_text()


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, hostile_upstream: tuple[HostileUpstream, str]
) -> Iterator[Proxy]:
    """One `serve` process for the tests that need none of their own."""
    with _serving(tmp_path_factory.mktemp("proxy"), hostile_upstream[1]) as proxy:
        yield proxy


@pytest.fixture
def fresh_proxy(tmp_path: Path, hostile_upstream: tuple[HostileUpstream, str]) -> Iterator[Proxy]:
    """A `serve` process that has served nothing yet."""
    with _serving(tmp_path, hostile_upstream[1]) as proxy:
        yield proxy


def _client(proxy: Proxy, key: str = KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{proxy.url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


async def _call(proxy: Proxy, body: dict[str, Any], key: str = KEY) -> tuple[str, bytes]:
    """The call's request id and the raw bytes of its answer, still encoded."""
    client = _client(proxy, key)
    async with client, client.stream("POST", "chat/completions", json=body) as r:
        assert r.status_code == 200
        raw = b"".join([piece async for piece in r.aiter_raw()])
        return r.headers["x-metering-request-id"], raw


# Item 3: a decompression bomb


async def test_a_gzip_bomb_is_relayed_byte_for_byte_in_bounded_memory(
    fresh_proxy: Proxy, hostile_upstream: tuple[HostileUpstream, str]
) -> None:
    proxy, (upstream, _) = fresh_proxy, hostile_upstream
    # A fair call first: what any call loads (tiktoken included) is in the baseline.
    proxy.record((await _call(proxy, {"model": "fair", "messages": HI}))[0])
    before = proxy.peak_memory_bytes()

    request_id, raw = await _call(proxy, {"model": "gzip-bomb", "messages": HI})

    proxy.record(request_id)  # settled: the answer was read as far as it ever will be
    assert raw == upstream.bomb
    assert proxy.peak_memory_bytes() - before < 150 * MiB


async def test_a_gzip_bomb_settles_an_estimated_record_of_the_prompt(proxy: Proxy) -> None:
    request_id, _ = await _call(proxy, {"model": "gzip-bomb", "messages": HI})

    record = proxy.record(request_id)
    assert record["estimated"]
    prompt = prompt_tokens.count_chat_prompt("gzip-bomb", HI)
    assert (record["input_tokens"], record["output_tokens"]) == (prompt, 0)
    assert record["cost_usd"] > 0


# Item 4: one event larger than any real one


async def _healthz_latencies(proxy: Proxy, until: asyncio.Task[Any]) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=proxy.url, timeout=60) as client:
        while not until.done():
            started = time.perf_counter()
            assert (await client.get("/healthz")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
    return latencies


async def test_healthz_answers_while_a_huge_event_streams(proxy: Proxy) -> None:
    body = {"model": "huge-event", "messages": HI, "stream": True}
    streaming = asyncio.create_task(_call(proxy, body))

    latencies = await _healthz_latencies(proxy, streaming)

    await streaming
    assert len(latencies) >= 3 and max(latencies) < 0.5, latencies


async def test_a_huge_event_reaches_the_client_unchanged_and_the_usage_after_it_is_metered(
    proxy: Proxy,
) -> None:
    body = {"model": "huge-event", "messages": HI, "stream": True}

    request_id, raw = await _call(proxy, body)

    assert raw == REWRITTEN_HUGE_EVENT_STREAM
    record = proxy.record(request_id)
    assert (record["input_tokens"], record["output_tokens"], record["estimated"]) == (12, 6, 0)


async def test_a_huge_event_is_relayed_before_it_ends_even_while_the_stream_is_rewritten(
    proxy: Proxy, hostile_upstream: tuple[HostileUpstream, str]
) -> None:
    upstream, _ = hostile_upstream
    body = {"model": "held-huge-event", "messages": HI, "stream": True}
    # The upstream holds the huge event's last piece until the client has all that came before.
    before_the_hold = len(_chunk({"role": "assistant", "content": "Hi"}, False))
    before_the_hold += sum(len(piece) for piece in HUGE_EVENT_STREAM[1:-4])
    upstream.release.clear()
    received = bytearray()

    client = _client(proxy)
    async with client, client.stream("POST", "chat/completions", json=body) as answer:
        async for piece in answer.aiter_raw():
            received += piece
            if len(received) >= before_the_hold:
                upstream.release.set()

    assert upstream.released_in_time
    assert received == REWRITTEN_HUGE_EVENT_STREAM


# Item 6: usage that would pay a team back


async def test_negative_usage_is_not_stored_and_does_not_lower_the_teams_spend(
    proxy: Proxy,
) -> None:
    await _call(proxy, {"model": "fair", "messages": HI}, REFUNDS_KEY)
    fair_spend = _settled_spend(proxy, calls=1)

    request_id, _ = await _call(proxy, {"model": "negative-usage", "messages": HI}, REFUNDS_KEY)

    spend = _settled_spend(proxy, calls=2)
    record = proxy.record(request_id)
    assert record["estimated"]
    prompt = prompt_tokens.count_chat_prompt("negative-usage", HI)
    output = tokens.count_text("negative-usage", ANSWER)
    assert (record["input_tokens"], record["output_tokens"]) == (prompt, output)
    assert spend == fair_spend + prompt + output  # $1 a token


def _settled_spend(proxy: Proxy, calls: int) -> Decimal:
    """The spend of the team `refunds` once it counts `calls` calls."""
    deadline = time.monotonic() + 10
    while True:
        spend, counted = proxy.spend("refunds")
        if counted >= calls:
            return spend
        assert time.monotonic() < deadline, f"the spend counts {counted} calls, not {calls}"
        time.sleep(0.05)
