"""The tap sees usage in answers and, when the proxy asked for stream usage, takes it back out."""

from __future__ import annotations

import gzip

import orjson

from proxy.metering.request_changes import body_asking_for_stream_usage, readable_accept_encoding
from proxy.metering.sse import EventSplitter, event_data
from proxy.metering.tap import ResponseTap
from proxy.request_fields import RequestFields

SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]
CHUNK = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
CHUNK_WITHOUT_USAGE = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
USAGE_CHUNK = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
DONE = b"data: [DONE]\n\n"


def relay(tap: ResponseTap, chunks: list[bytes]) -> bytes:
    return b"".join(tap.feed(chunk) for chunk in chunks) + tap.finish()


def test_events_split_across_chunks_are_put_back_together() -> None:
    splitter = EventSplitter()
    stream = CHUNK + USAGE_CHUNK
    events = [e for i in range(0, len(stream), 7) for e in splitter.feed(stream[i : i + 7])]
    assert events == [CHUNK, USAGE_CHUNK] and splitter.rest() == b""


def test_event_data_joins_multiline_data_and_skips_other_fields() -> None:
    assert event_data(b"event: x\r\ndata: a\r\ndata:b\r\n\r\n") == b"a\nb"


def test_added_usage_is_stripped_byte_for_byte() -> None:
    tap = ResponseTap(strip_added_usage=True)
    tap.start(200, SSE)
    stream = CHUNK * 3 + USAGE_CHUNK + DONE
    relayed = relay(tap, [stream[i : i + 5] for i in range(0, len(stream), 5)])
    assert relayed == CHUNK_WITHOUT_USAGE * 3 + DONE
    assert len(tap.usage_events) == 1


def test_usage_the_client_asked_for_is_left_alone() -> None:
    tap = ResponseTap(strip_added_usage=False)
    tap.start(200, SSE)
    stream = CHUNK + USAGE_CHUNK + DONE
    assert relay(tap, [stream]) == stream
    assert tap.usage_events == [USAGE_CHUNK[6:-2]]


def test_rewriting_drops_the_upstream_content_length() -> None:
    tap = ResponseTap(strip_added_usage=True)
    headers = tap.start(200, [*SSE, (b"Content-Length", b"120")])
    assert all(name.lower() != b"content-length" for name, _ in headers)


def test_gzipped_json_answers_are_read() -> None:
    body = gzip.compress(orjson.dumps({"usage": {"prompt_tokens": 7}}))
    tap = ResponseTap(strip_added_usage=False)
    tap.start(200, [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")])
    assert relay(tap, [body[:10], body[10:]]) == body
    assert tap.json_body() == {"usage": {"prompt_tokens": 7}}


def test_stream_usage_is_asked_for_only_when_missing() -> None:
    asked = RequestFields(
        "gpt-4o", True, {"stream": True, "stream_options": {"include_usage": True}}
    )
    assert body_asking_for_stream_usage("chat", asked) is None
    plain = RequestFields("gpt-4o", True, {"model": "gpt-4o", "stream": True})
    body = body_asking_for_stream_usage("chat", plain)
    assert body is not None and orjson.loads(body)["stream_options"] == {"include_usage": True}
    assert body_asking_for_stream_usage("embeddings", plain) is None
    assert body_asking_for_stream_usage("chat", RequestFields("gpt-4o", False, {})) is None


def test_accept_encoding_is_narrowed_to_what_the_tap_reads() -> None:
    headers = [(b"accept-encoding", b"br, gzip;q=0.8, zstd"), (b"x-other", b"1")]
    assert readable_accept_encoding(headers, identity_only=False) == [
        (b"accept-encoding", b"gzip;q=0.8"),
        (b"x-other", b"1"),
    ]
    assert readable_accept_encoding(headers, identity_only=True) == [(b"x-other", b"1")]
