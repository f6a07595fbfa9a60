"""The tap sees usage in answers and, when the proxy asked for stream usage, takes it back out."""

from __future__ import annotations

import gzip
import sys
import zlib

import orjson
import pytest

from proxy.metering.inflate import PIECE_BYTES, Inflater
from proxy.metering.request_changes import body_asking_for_stream_usage, readable_accept_encoding
from proxy.metering.sse import MAX_EVENT_BYTES, EventSplitter, Unread, event_data
from proxy.metering.tap import MAX_KEPT_BODY_BYTES, ResponseTap
from proxy.request_fields import RequestFields

SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]
CHUNK = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
CHUNK_WITHOUT_USAGE = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
USAGE_CHUNK = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
DONE = b"data: [DONE]\n\n"
GZIP_WBITS = 16 + zlib.MAX_WBITS


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


# Bounds: what a hostile upstream sends is read only so far, and relayed all the same.

GZIP_JSON = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
GZIP_SSE = [*SSE, (b"content-encoding", b"gzip")]


def pieces_of(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


@pytest.mark.parametrize("end", [b"\r\n\r\n", b"\n\n", b"\r\r"])
def test_an_event_end_is_found_wherever_the_chunks_cut_it(end: bytes) -> None:
    stream = b"data: a" + end + b"data: b" + end
    for cut in range(1, len(stream)):
        splitter = EventSplitter()
        events = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
        assert events == [b"data: a" + end, b"data: b" + end], cut
        assert splitter.rest() == b""


def test_an_event_past_the_cap_is_handed_on_unread_up_to_its_end() -> None:
    huge = b"data: " + b"x" * 300 + b"\n\n"
    stream = CHUNK + huge + USAGE_CHUNK
    splitter = EventSplitter(max_event_bytes=100)

    pieces = [piece for chunk in pieces_of(stream, 16) for piece in splitter.feed(chunk)]

    unread = [piece for piece in pieces if isinstance(piece, Unread)]
    assert b"".join(pieces) == stream
    assert b"".join(unread) == huge
    assert [piece for piece in pieces if not isinstance(piece, Unread)] == [CHUNK, USAGE_CHUNK]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_the_end_of_an_event_past_the_cap_is_found_across_chunks(cut: int) -> None:
    splitter = EventSplitter(max_event_bytes=10)
    splitter.feed(b"data: " + b"x" * 20)
    end = b"\r\n\r\n"

    pieces = splitter.feed(b"xx" + end[:cut]) + splitter.feed(end[cut:] + CHUNK)

    assert pieces[-1] == CHUNK and not isinstance(pieces[-1], Unread)
    assert b"".join(pieces[:-1]) == b"xx" + end


def test_a_partial_event_past_the_cap_is_not_kept() -> None:
    splitter = EventSplitter(max_event_bytes=10)
    splitter.feed(b"data: " + b"x" * 20)
    splitter.feed(b"x" * 20)
    assert splitter.rest() == b""


def test_a_stream_with_an_event_past_the_cap_is_rewritten_around_it_byte_for_byte() -> None:
    huge = b'data: {"choices":[{"delta":{"content":"' + b"x" * (MAX_EVENT_BYTES + 65536)
    huge += b'"}}],"usage":null}\n\n'
    tap = ResponseTap(strip_added_usage=True)
    tap.start(200, SSE)

    relayed = relay(tap, pieces_of(CHUNK + huge + CHUNK + USAGE_CHUNK + DONE, 65536))

    # The huge event goes as it came: only the events the tap read lose what the proxy added.
    assert relayed == CHUNK_WITHOUT_USAGE + huge + CHUNK_WITHOUT_USAGE + DONE
    assert tap.usage_events == [USAGE_CHUNK[6:-2]] and not tap.unread_since_usage


def test_usage_seen_before_an_unread_event_may_be_stale() -> None:
    tap = ResponseTap(strip_added_usage=False)
    tap.start(200, SSE)
    huge = b"data: " + b"x" * (MAX_EVENT_BYTES + 65536) + b"\n\n"
    relay(tap, pieces_of(USAGE_CHUNK + huge + DONE, 65536))
    assert tap.usage_events and tap.unread_since_usage


def test_the_events_kept_for_counting_take_no_more_memory_than_the_cap() -> None:
    tiny = b"data: x\n\n"
    tap = ResponseTap(strip_added_usage=False)
    tap.start(200, SSE)
    relay(tap, pieces_of(tiny * (MAX_KEPT_BODY_BYTES // 40), 65536))
    # Each kept event is a bytes object and a slot in a list, whatever its length.
    assert sum(sys.getsizeof(data) + 8 for data in tap.events) <= MAX_KEPT_BODY_BYTES


def test_a_gzip_answer_inflating_past_the_cap_is_relayed_and_not_read() -> None:
    body = gzip.compress(b'{"usage":{"prompt_tokens":7},"pad":"' + b" " * MAX_KEPT_BODY_BYTES)
    tap = ResponseTap(strip_added_usage=False)
    tap.start(200, GZIP_JSON)

    assert relay(tap, pieces_of(body, 16384)) == body
    assert tap.overflowed and tap.json_body() is None


def test_a_gzip_answer_inflating_to_just_the_cap_is_read() -> None:
    document = b'{"usage":{"prompt_tokens":7},"pad":""}'
    padded = document[:-2] + b" " * (MAX_KEPT_BODY_BYTES - len(document)) + document[-2:]
    tap = ResponseTap(strip_added_usage=False)
    tap.start(200, GZIP_JSON)
    relay(tap, pieces_of(gzip.compress(padded), 16384))
    assert tap.json_body()["usage"] == {"prompt_tokens": 7}


def test_a_gzip_stream_inflating_past_the_cap_stops_being_read() -> None:
    events = CHUNK * (MAX_KEPT_BODY_BYTES // len(CHUNK) + 1) + USAGE_CHUNK + DONE
    body = gzip.compress(events)
    tap = ResponseTap(strip_added_usage=True)  # a stream asked for unencoded: never rewritten
    tap.start(200, GZIP_SSE)

    assert relay(tap, pieces_of(body, 16384)) == body
    assert tap.overflowed and tap.usage_events == [] and tap.unread_since_usage


def test_an_answer_not_in_its_claimed_encoding_is_relayed_and_not_read() -> None:
    body = orjson.dumps({"usage": {"prompt_tokens": 7}})
    tap = ResponseTap(strip_added_usage=False)
    tap.start(200, GZIP_JSON)
    assert relay(tap, [body]) == body
    assert tap.json_body() is None


def test_a_stream_in_an_encoding_the_tap_cannot_read_is_relayed_untouched() -> None:
    body = b"\x1b\x00\n\n" + CHUNK + USAGE_CHUNK  # as if brotli, which was not asked for
    tap = ResponseTap(strip_added_usage=True)
    headers = [*SSE, (b"content-encoding", b"br"), (b"content-length", b"200")]

    assert tap.start(200, headers) == headers
    assert relay(tap, pieces_of(body, 7)) == body
    assert tap.overflowed and tap.usage_events == [] and tap.events == []


def test_inflating_stops_one_byte_past_the_limit() -> None:
    exactly, over = Inflater(GZIP_WBITS, limit=1000), Inflater(GZIP_WBITS, limit=999)
    body = gzip.compress(b"x" * 1000)
    assert b"".join(exactly.inflate(body)) == b"x" * 1000 and not exactly.stopped
    assert b"".join(over.inflate(body)) == b"" and over.stopped


def test_inflating_without_a_limit_gives_pieces_of_bounded_size() -> None:
    inflater = Inflater(GZIP_WBITS, limit=None)
    pieces = list(inflater.inflate(gzip.compress(b"x" * (5 * PIECE_BYTES + 3))))
    assert sum(map(len, pieces)) == 5 * PIECE_BYTES + 3
    assert max(map(len, pieces)) == PIECE_BYTES
