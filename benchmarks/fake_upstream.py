"""An OpenAI upstream that costs almost nothing: raw ASGI, answers prepared once, at start.

It answers `POST /v1/chat/completions` (JSON, or an event stream of `STREAM_CHUNKS` content
chunks plus the usage chunk when `stream_options.include_usage` asks for it), `POST
/v1/embeddings` and `GET /v1/models`, with usage reported as OpenAI reports it. Each stream chunk
is its own write, so the proxy sees a real stream and not one buffer. A stream asked for with the
header `x-fake-event-delay-ms: N` pauses N ms before each event after the first (the soak's
clients hang up part way through such a stream).

Run: `python -m benchmarks.fake_upstream --port 9100` (uvicorn with uvloop and httptools).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvicorn

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
STREAM_CHUNKS = 20
CREATED = 1_764_000_000
_COMPLETION_ID = "chatcmpl-bench0000000000000000000001"
_USAGE = {"prompt_tokens": 42, "completion_tokens": STREAM_CHUNKS, "total_tokens": 42 + 20}
_JSON_HEADERS = [(b"content-type", b"application/json"), (b"x-request-id", b"req_bench")]
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-request-id", b"req_bench"),
]


def _event(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


def _chat_answer() -> bytes:
    return orjson.dumps(
        {
            "id": _COMPLETION_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": f"{MODEL}-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "word " * STREAM_CHUNKS},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                **_USAGE,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_bench",
        }
    )


def _stream_events(include_usage: bool) -> list[bytes]:
    """The events of one streamed answer: role, content chunks, finish, [usage], [DONE]."""
    usage_field: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        return _event(
            {
                "id": _COMPLETION_ID,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": f"{MODEL}-2024-07-18",
                "system_fingerprint": "fp_bench",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
                **usage_field,
            }
        )

    events = [chunk({"role": "assistant", "content": ""}, None)]
    events += [chunk({"content": " word"}, None) for _ in range(STREAM_CHUNKS)]
    events.append(chunk({}, "stop"))
    if include_usage:
        usage_chunk = {
            "id": _COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": f"{MODEL}-2024-07-18",
            "system_fingerprint": "fp_bench",
            "choices": [],
            "usage": _USAGE,
        }
        events.append(_event(usage_chunk))
    events.append(b"data: [DONE]\n\n")
    return events


def _embedding_answer() -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0123] * 256}],
            "model": EMBEDDING_MODEL,
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )


def _models_answer() -> bytes:
    models = [
        {"id": name, "object": "model", "created": CREATED, "owned_by": "system"}
        for name in (MODEL, EMBEDDING_MODEL)
    ]
    return orjson.dumps({"object": "list", "data": models})


class FakeUpstream:
    """The ASGI app; every answer is bytes built in `__init__`."""

    def __init__(self) -> None:
        self._chat = _chat_answer()
        self._embedding = _embedding_answer()
        self._models = _models_answer()
        self._streams = {usage: _stream_events(usage) for usage in (False, True)}

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = await _read_body(receive)
        path: str = scope["path"]
        if path.endswith("/chat/completions"):
            request = orjson.loads(body)
            if request.get("stream"):
                options = request.get("stream_options") or {}
                events = self._streams[bool(options.get("include_usage"))]
                await _stream(send, events, _event_delay_seconds(scope))
            else:
                await _answer(send, 200, self._chat)
        elif path.endswith("/embeddings"):
            await _answer(send, 200, self._embedding)
        elif path.endswith("/models"):
            await _answer(send, 200, self._models)
        else:
            error = {"error": {"message": "not found", "type": "invalid_request_error"}}
            await _answer(send, 404, orjson.dumps(error))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _event_delay_seconds(scope: Message) -> float:
    for name, value in scope["headers"]:
        if name == b"x-fake-event-delay-ms":
            return int(value) / 1000
    return 0.0


async def _stream(send: Send, events: list[bytes], delay_seconds: float = 0.0) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
    for index, event in enumerate(events):
        if delay_seconds and index:
            await asyncio.sleep(delay_seconds)
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    uvicorn.run(
        FakeUpstream(),
        host=arguments.host,
        port=arguments.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
