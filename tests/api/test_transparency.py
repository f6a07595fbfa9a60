"""A client cannot tell the proxy is there: status, headers and bytes arrive as sent upstream."""

from __future__ import annotations

import socket

import httpx
import openai
import orjson
import pytest

from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.fake_upstream import STREAM_CHUNKS, FakeUpstream

ProxyToFake = tuple[FakeUpstream, str]
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
STREAMED_CHAT = {**CHAT, "stream": True}


def test_upstream_headers_reach_the_client(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    response = httpx.post(f"{proxy_url}/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req_fake_0001"
    assert response.headers["openai-processing-ms"] == "42"
    assert response.headers["x-ratelimit-remaining-requests"] == "9999"
    assert response.headers["content-type"] == "application/json"


def test_hop_by_hop_headers_of_the_upstream_are_dropped(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    response = httpx.post(f"{proxy_url}/chat/completions", json=CHAT)
    assert "keep-alive" not in response.headers


def test_error_status_headers_and_body_arrive_unchanged(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    response = httpx.post(f"{proxy_url}/chat/completions", json={**CHAT, "model": "rate-limited"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_every_v1_response_carries_a_metering_request_id(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    forwarded = httpx.post(f"{proxy_url}/chat/completions", json=CHAT)
    passed_through = httpx.get(f"{proxy_url}/files")
    refused = httpx.post(f"{proxy_url}/chat/completions", json={**CHAT, "model": "unknown-x"})
    ids = {r.headers["x-metering-request-id"] for r in (forwarded, passed_through, refused)}
    assert len(ids) == 3 and all(len(i) == 32 for i in ids)


def test_hop_by_hop_and_proxy_headers_of_the_client_stay_at_the_proxy(
    proxy_to_fake: ProxyToFake,
) -> None:
    fake, proxy_url = proxy_to_fake
    httpx.post(
        f"{proxy_url}/chat/completions",
        json=CHAT,
        headers={
            "Connection": "keep-alive, x-connection-only",
            "X-Connection-Only": "1",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "X-Metering-Tags": "team=search",
            "OpenAI-Organization": "org-123",
        },
    )
    seen = fake.last.headers
    assert "x-connection-only" not in seen
    assert "proxy-authorization" not in seen
    assert "x-metering-tags" not in seen
    assert seen["openai-organization"] == "org-123"


def test_no_accept_encoding_is_added_for_the_client(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    with socket.create_connection(("127.0.0.1", httpx.URL(proxy_url).port)) as connection:
        body = orjson.dumps(CHAT)
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert "accept-encoding" not in fake.last.headers
    assert "user-agent" not in fake.last.headers


def test_compressed_answers_arrive_in_the_upstream_encoding(
    proxy_to_fake: ProxyToFake, fake_upstream: tuple[FakeUpstream, str]
) -> None:
    _, proxy_url = proxy_to_fake
    _, upstream_url = fake_upstream
    headers = {"Accept-Encoding": "gzip", "X-Fake-Gzip": "1"}
    with httpx.stream("POST", f"{upstream_url}/chat/completions", json=CHAT, headers=headers) as r:
        direct = b"".join(r.iter_raw())
    with httpx.stream("POST", f"{proxy_url}/chat/completions", json=CHAT, headers=headers) as r:
        proxied = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["content-length"] == str(len(direct))
    assert proxied == direct
    assert httpx.post(f"{proxy_url}/chat/completions", json=CHAT, headers=headers).json()["id"]


def test_calls_reuse_one_kept_alive_upstream_connection(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    for _ in range(5):
        httpx.post(f"{proxy_url}/chat/completions", json=CHAT)
    assert len({call.client_port for call in fake.requests}) == 1


def test_client_accept_encoding_goes_upstream(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    httpx.post(f"{proxy_url}/chat/completions", json=CHAT, headers={"Accept-Encoding": "gzip"})
    assert fake.last.headers["accept-encoding"] == "gzip"


@pytest.mark.parametrize("include_usage", [False, True])
def test_streamed_bytes_are_identical_to_the_upstream_bytes(
    proxy_to_fake: ProxyToFake, fake_upstream: tuple[FakeUpstream, str], include_usage: bool
) -> None:
    _, proxy_url = proxy_to_fake
    _, upstream_url = fake_upstream
    request = {**STREAMED_CHAT, "stream_options": {"include_usage": include_usage}}
    direct = httpx.post(f"{upstream_url}/chat/completions", json=request)
    proxied = httpx.post(f"{proxy_url}/chat/completions", json=request)
    assert proxied.content == direct.content
    assert proxied.content.endswith(b"data: [DONE]\n\n")
    assert proxied.headers["content-type"] == direct.headers["content-type"]


def test_first_chunk_arrives_while_the_upstream_holds_the_rest(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    request = {**STREAMED_CHAT, "model": "held-stream"}
    with httpx.stream("POST", f"{proxy_url}/chat/completions", json=request, timeout=5) as response:
        lines = response.iter_lines()
        first = next(lines)
        assert first.startswith("data: ") and STREAM_CHUNKS[0] in first
        assert not fake.cancelled.is_set()
        fake.release()
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"


def test_client_hang_up_mid_stream_cancels_the_upstream_request(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    request = {**STREAMED_CHAT, "model": "held-stream"}
    with httpx.stream("POST", f"{proxy_url}/chat/completions", json=request, timeout=5) as response:
        next(response.iter_lines())
    # Leaving the block closed the client's connection while the upstream was still holding.
    assert fake.cancelled.wait(timeout=2), "the upstream never saw the request cancelled"


async def test_sdk_stream_closed_early_cancels_the_upstream_request(
    proxy_to_fake: ProxyToFake,
) -> None:
    fake, proxy_url = proxy_to_fake
    async with openai.AsyncOpenAI(base_url=proxy_url, api_key="sk-x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="held-stream", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        async for _ in stream:
            break
        await stream.close()
    assert fake.cancelled.wait(timeout=2)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_upstream_is_a_502_in_openai_shape(start_proxy: ProxyFactory) -> None:
    proxy_url = start_proxy(
        f'[[upstreams]]\nname = "down"\nbase_url = "http://127.0.0.1:{_closed_port()}/v1"\n'
    )
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(**CHAT)
    assert raised.value.status_code == 502
    assert raised.value.body == {
        "message": "Could not connect to the upstream 'down'.",
        "type": "server_error",
        "param": None,
        "code": "upstream_unreachable",
    }


def test_upstream_timeout_is_a_504_in_openai_shape(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    fake, upstream_url = fake_upstream
    proxy_url = start_proxy("[timeouts]\nread = 0.2\n" + single_upstream_config(upstream_url))
    response = httpx.post(f"{proxy_url}/chat/completions", json={**CHAT, "model": "slow-headers"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert len(fake.requests) == 1
    assert response.headers["x-metering-request-id"]


def test_total_timeout_bounds_the_whole_call(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    _, upstream_url = fake_upstream
    proxy_url = start_proxy(
        "[timeouts]\nread = 30\ntotal = 0.2\n" + single_upstream_config(upstream_url)
    )
    response = httpx.post(f"{proxy_url}/chat/completions", json={**CHAT, "model": "slow-headers"})
    assert response.status_code == 504


def test_body_over_the_limit_is_a_413_before_the_upstream_is_called(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    fake, upstream_url = fake_upstream
    proxy_url = start_proxy("max_body_bytes = 1000\n" + single_upstream_config(upstream_url))
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x" * 2000}]
        )
    assert raised.value.status_code == 413
    assert raised.value.code == "request_too_large"
    assert fake.requests == []


def test_chunked_body_over_the_limit_is_a_413(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    fake, upstream_url = fake_upstream
    proxy_url = start_proxy("max_body_bytes = 1000\n" + single_upstream_config(upstream_url))
    chunks = iter([b'{"model": "gpt-4o", "input": "', b"x" * 2000, b'"}'])
    response = httpx.post(f"{proxy_url}/embeddings", content=chunks)
    assert response.status_code == 413
    assert fake.requests == []


def test_malformed_json_is_a_400_in_openai_shape(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    response = httpx.post(
        f"{proxy_url}/chat/completions",
        content=b'{"model": "gpt-4o", ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


def test_path_encoding_and_query_reach_the_upstream_unchanged(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    httpx.get(f"{proxy_url}/files?purpose=batch&limit=2&after=file%2Fx")
    assert fake.last.path == "/v1/files"
    assert fake.last.query == "purpose=batch&limit=2&after=file%2Fx"


def test_a_bodiless_call_goes_upstream_without_a_body(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    httpx.get(f"{proxy_url}/files")
    assert "transfer-encoding" not in fake.last.headers
    assert fake.last.headers.get("content-length", "0") == "0"


def test_an_upload_over_the_body_limit_streams_through_with_its_length(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    fake, upstream_url = fake_upstream
    proxy_url = start_proxy("max_body_bytes = 1000\n" + single_upstream_config(upstream_url))
    content = b'{"custom_id": "request-1"}\n' * 5000
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-x", max_retries=0)
    client.files.create(file=("batch.jsonl", content), purpose="batch")
    assert content in fake.last.body
    assert fake.last.headers["content-length"] == str(len(fake.last.body))
    assert "transfer-encoding" not in fake.last.headers


def test_a_chunked_upload_streams_through_chunked(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    fake, upstream_url = fake_upstream
    proxy_url = start_proxy("max_body_bytes = 1000\n" + single_upstream_config(upstream_url))
    parts = [b"part-%d;" % index * 100 for index in range(20)]
    httpx.post(f"{proxy_url}/files", content=iter(parts))
    assert fake.last.body == b"".join(parts)
    assert fake.last.headers["transfer-encoding"] == "chunked"


def test_upstream_failing_mid_stream_cuts_the_client_stream_and_the_proxy_carries_on(
    proxy_to_fake: ProxyToFake,
) -> None:
    _, proxy_url = proxy_to_fake
    request = {**STREAMED_CHAT, "model": "broken-stream"}
    received = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{proxy_url}/chat/completions", json=request) as response,
    ):
        assert response.status_code == 200
        received.extend(response.iter_lines())
    assert STREAM_CHUNKS[0] in received[0]
    assert httpx.post(f"{proxy_url}/chat/completions", json=CHAT).status_code == 200
