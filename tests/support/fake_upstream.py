"""A local fake of an OpenAI-compatible upstream, raw ASGI, with answers shaped like the real API.

Behaviour is chosen by the request's `model`, so a test needs no extra wiring:
- `rate-limited`: 429 with `retry-after` and OpenAI's error body;
- `bad-request`: 400 with an error message;
- `held-stream`: streams one chunk, then holds the rest until `release()` (and notices a hang-up);
- `slow-headers`: waits `slow_seconds` before answering at all;
- `broken-stream`: streams one chunk, then drops the connection mid-answer;
- `truncated-body`: a chat answer whose `content-length` promises more than the half it sends
  before dropping the connection;
- `server-error`: 500;
- `unauthorized`: 401, as for a wrong API key (whose message does not echo the key);
- header `x-fake-no-usage`: never reports usage, even when asked (as some self-hosted servers).
A fake made with `failing_status` answers every POST with that status and OpenAI's error body,
whatever the model (an upstream that is down while another one is not).
A request with an `x-fake-replay: NAME` header is answered with the recorded answer
`tests/fixtures/replays/NAME.json` or `.sse`, byte for byte.
Every request is recorded, with its path, query, headers and body.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.support.asgi import Receive, Scope, Send, read_body

UPSTREAM_HEADERS = [
    (b"x-request-id", b"req_fake_0001"),
    (b"openai-processing-ms", b"42"),
    (b"openai-version", b"2020-10-01"),
    (b"x-ratelimit-limit-requests", b"10000"),
    (b"x-ratelimit-remaining-requests", b"9999"),
    (b"x-ratelimit-reset-requests", b"6ms"),
    # Hop-by-hop: must not reach the proxy's client.
    (b"keep-alive", b"timeout=5"),
]
# Fixed, so that two answers to the same call are the same bytes (compressed ones included).
CREATED = 1_764_000_000
STREAM_CHUNKS = ("Hello", " from", " the", " fake", " upstream", ".")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    client_port: int

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class FakeUpstream:
    models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "dall-e-3")
    slow_seconds: float = 2.0
    failing_status: int | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    first_chunk_sent: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    _release: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """Let a `held-stream` answer finish."""
        self._release.set()

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        request = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode(),
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body=body,
            client_port=scope["client"][1],
        )
        self.requests.append(request)
        await self._answer(request, receive, send)

    async def _answer(self, request: RecordedRequest, receive: Receive, send: Send) -> None:
        path = request.path
        if request.method == "GET" and path.endswith("/models"):
            return await _json(send, 200, _model_list(self.models))
        if "/batches" in path or path.endswith("/content"):
            return await self._batch_api(request, send)
        if path.endswith("/files"):
            if request.method == "GET":
                return await _json(send, 200, {"object": "list", "data": [], "has_more": False})
            return await _json(send, 200, _file_object(request))
        if request.method != "POST":
            return await _json(send, 404, _error("No such route.", "invalid_request_error"))
        if "x-fake-replay" in request.headers:
            return await _replay(send, request.headers["x-fake-replay"])
        if self.failing_status is not None:
            return await _json(
                send, self.failing_status, _error("The fake upstream is failing.", "server_error")
            )
        model = _model_of(request)
        if model == "rate-limited":
            return await _json(
                send,
                429,
                _error("Rate limit reached for requests.", "requests", code="rate_limit_exceeded"),
                extra=[(b"retry-after", b"7")],
            )
        if model == "server-error":
            return await _json(send, 500, _error("The server had an error.", "server_error"))
        if model == "unauthorized":
            return await _json(
                send,
                401,
                _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
            )
        if model == "bad-request":
            return await _json(
                send, 400, _error("Invalid value for 'temperature'.", "invalid_request_error")
            )
        if model == "slow-headers":
            await asyncio.sleep(self.slow_seconds)
        for suffix, handler in _HANDLERS.items():
            if path.endswith(suffix):
                return await handler(self, request, model, receive, send)
        return await _json(send, 404, _error("No such route.", "invalid_request_error"))

    async def _chat(
        self, request: RecordedRequest, model: str, receive: Receive, send: Send
    ) -> None:
        body = request.json()
        reports_usage = "x-fake-no-usage" not in request.headers
        if not body.get("stream"):
            completion = _chat_completion(model)
            if not reports_usage:
                del completion["usage"]
            if request.headers.get("x-fake-gzip"):
                return await _gzipped_json(send, completion)
            if model == "truncated-body":
                return await _truncated_json(send, completion)
            return await _json(send, 200, completion)
        await _start(send, 200, b"text/event-stream; charset=utf-8")
        asked = (body.get("stream_options") or {}).get("include_usage", False)
        include_usage = asked and reports_usage
        for index, text in enumerate(STREAM_CHUNKS):
            await _event(send, _chat_chunk(model, {"content": text}, None, include_usage))
            if index == 0:
                self.first_chunk_sent.set()
                if model == "broken-stream":
                    raise ConnectionAbortedError("the fake upstream drops the connection")
                if model == "held-stream" and not await self._hold(receive):
                    return
        await _event(send, _chat_chunk(model, {}, "stop", include_usage))
        if include_usage:
            await _event(send, {**_chat_chunk(model, None, None, True), "usage": _chat_usage()})
        await _raw(send, b"data: [DONE]\n\n", more=False)

    async def _batch_api(self, request: RecordedRequest, send: Send) -> None:
        """One chat batch, `batch_fake`, done at once; its output file is `file-batch-out`."""
        if request.path.endswith("/content"):
            await _start(send, 200, b"application/octet-stream")
            return await _raw(send, BATCH_OUTPUT, more=False)
        created = request.method == "POST"
        return await _json(send, 200, _batch_object(completed=not created))

    async def _hold(self, receive: Receive) -> bool:
        """Wait for `release()`; False (and `cancelled` set) if the client went away first."""
        hang_up = asyncio.ensure_future(receive())
        try:
            while not self._release.is_set():
                if hang_up.done():
                    self.cancelled.set()
                    return False
                await asyncio.sleep(0.005)
            return True
        finally:
            hang_up.cancel()

    async def _responses(
        self, request: RecordedRequest, model: str, receive: Receive, send: Send
    ) -> None:
        body = request.json()
        response = _response_object(model)
        if not body.get("stream"):
            return await _json(send, 200, response)
        await _start(send, 200, b"text/event-stream; charset=utf-8")
        in_progress = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "sequence_number": 0, "response": in_progress},
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "msg_fake",
                "output_index": 0,
                "content_index": 0,
                "delta": "Hello",
                "logprobs": [],
            },
            {"type": "response.completed", "sequence_number": 2, "response": response},
        ]
        for event in events:
            line = b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
            await _raw(send, line, more=True)
        await _raw(send, b"", more=False)

    async def _embeddings(
        self, request: RecordedRequest, model: str, receive: Receive, send: Send
    ) -> None:
        vector = [0.25, -0.5, 0.125]
        as_base64 = request.json().get("encoding_format") == "base64"
        embedding: Any = (
            base64.b64encode(struct.pack("<3f", *vector)).decode() if as_base64 else vector
        )
        await _json(
            send,
            200,
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
                "model": model,
                "usage": {"prompt_tokens": 5, "total_tokens": 5},
            },
        )

    async def _images(
        self, request: RecordedRequest, model: str, receive: Receive, send: Send
    ) -> None:
        await _json(
            send,
            200,
            {"created": 1_700_000_000, "data": [{"url": "https://images.example/fake.png"}]},
        )

    async def _speech(
        self, request: RecordedRequest, model: str, receive: Receive, send: Send
    ) -> None:
        await _start(send, 200, b"audio/mpeg")
        await _raw(send, FAKE_MP3, more=False)

    async def _transcription(
        self, request: RecordedRequest, model: str, receive: Receive, send: Send
    ) -> None:
        await _json(send, 200, {"text": "hello from the fake upstream"})

    async def _moderations(
        self, request: RecordedRequest, model: str, receive: Receive, send: Send
    ) -> None:
        await _json(
            send,
            200,
            {"id": "modr-fake", "model": model, "results": [{"flagged": False, "categories": {}}]},
        )

    async def _completions(
        self, request: RecordedRequest, model: str, receive: Receive, send: Send
    ) -> None:
        await _json(
            send,
            200,
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 1_700_000_000,
                "model": model,
                "choices": [
                    {"text": " world", "index": 0, "logprobs": None, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )


Handler = Callable[[FakeUpstream, RecordedRequest, str, Receive, Send], Awaitable[None]]
# Matched by suffix, longest first, so the fake answers under any prefix (Azure's deployments).
_HANDLERS: dict[str, Handler] = {
    "/chat/completions": FakeUpstream._chat,
    "/responses": FakeUpstream._responses,
    "/embeddings": FakeUpstream._embeddings,
    "/images/generations": FakeUpstream._images,
    "/images/edits": FakeUpstream._images,
    "/images/variations": FakeUpstream._images,
    "/audio/speech": FakeUpstream._speech,
    "/audio/transcriptions": FakeUpstream._transcription,
    "/audio/translations": FakeUpstream._transcription,
    "/moderations": FakeUpstream._moderations,
    "/completions": FakeUpstream._completions,
}

REPLAYS = Path(__file__).parent.parent / "fixtures" / "replays"
FAKE_MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 4


def _model_of(request: RecordedRequest) -> str:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json") and request.body:
        return str(request.json().get("model", ""))
    marker = b'name="model"\r\n\r\n'
    start = request.body.find(marker)
    if start < 0:
        return ""
    start += len(marker)
    return request.body[start : request.body.find(b"\r\n", start)].decode()


def _error(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _model_list(models: tuple[str, ...]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
            for model in models
        ],
    }


def _file_object(request: RecordedRequest) -> dict[str, Any]:
    return {
        "id": "file-fake",
        "object": "file",
        "bytes": len(request.body),
        "created_at": 1_700_000_000,
        "filename": "batch.jsonl",
        "purpose": "batch",
    }


def _chat_usage() -> dict[str, Any]:
    return {
        "prompt_tokens": 12,
        "completion_tokens": 6,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(STREAM_CHUNKS),
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _chat_usage(),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _chat_chunk(
    model: str, delta: dict[str, Any] | None, finish_reason: str | None, include_usage: bool
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:
        chunk["usage"] = None
    return chunk


def _response_object(model: str) -> dict[str, Any]:
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": "completed",
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_fake",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 2,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 12,
        },
    }


async def _start(
    send: Send, status: int, content_type: bytes, extra: list[Any] | None = None
) -> None:
    headers = [(b"content-type", content_type), *UPSTREAM_HEADERS, *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _raw(send: Send, body: bytes, *, more: bool) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def _event(send: Send, payload: dict[str, Any]) -> None:
    await _raw(send, b"data: " + orjson.dumps(payload) + b"\n\n", more=True)


async def _json(
    send: Send, status: int, payload: dict[str, Any], extra: list[Any] | None = None
) -> None:
    body = orjson.dumps(payload)
    await _start(
        send,
        status,
        b"application/json",
        [(b"content-length", str(len(body)).encode()), *(extra or [])],
    )
    await _raw(send, body, more=False)


async def _truncated_json(send: Send, payload: dict[str, Any]) -> None:
    body = orjson.dumps(payload)
    await _start(send, 200, b"application/json", [(b"content-length", str(len(body)).encode())])
    await _raw(send, body[: len(body) // 2], more=True)
    raise ConnectionAbortedError("the fake upstream drops the connection mid-body")


async def _gzipped_json(send: Send, payload: dict[str, Any]) -> None:
    body = gzip.compress(orjson.dumps(payload), mtime=0)
    extra = [(b"content-encoding", b"gzip"), (b"content-length", str(len(body)).encode())]
    await _start(send, 200, b"application/json", extra)
    await _raw(send, body, more=False)


async def _replay(send: Send, name: str) -> None:
    """Answer with a recorded answer, as it was recorded."""
    for suffix, content_type in ((".json", b"application/json"), (".sse", b"text/event-stream")):
        path = REPLAYS / f"{name}{suffix}"
        if path.exists():
            await _start(send, 200, content_type)
            await _raw(send, path.read_bytes(), more=False)
            return
    await _json(send, 404, _error(f"No replay named {name}.", "invalid_request_error"))


def _batch_line(number: int) -> bytes:
    completion = {**_chat_completion("gpt-4o-mini-2024-07-18"), "created": 1_700_000_000}
    line = {
        "id": f"batch_req_{number}",
        "custom_id": f"request-{number}",
        "response": {"status_code": 200, "request_id": f"req_{number}", "body": completion},
        "error": None,
    }
    return orjson.dumps(line) + b"\n"


BATCH_LINES = 3
BATCH_OUTPUT = b"".join(_batch_line(number) for number in range(1, BATCH_LINES + 1))


def _batch_object(completed: bool) -> dict[str, Any]:
    return {
        "id": "batch_fake",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": "file-batch-in",
        "completion_window": "24h",
        "status": "completed" if completed else "validating",
        "output_file_id": "file-batch-out" if completed else None,
        "error_file_id": None,
        "created_at": 1_700_000_000,
        "request_counts": {
            "total": BATCH_LINES,
            "completed": BATCH_LINES if completed else 0,
            "failed": 0,
        },
    }
