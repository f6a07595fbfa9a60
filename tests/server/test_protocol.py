"""The client deadlines hold the client to its request only: an answer may take its time, a kept-
alive connection's next request gets its own deadline, pipelined requests are all answered, and a
body that stalls on a route outside `/v1` gets the server's own 408."""

from __future__ import annotations

import socket

import httpx
import orjson
import pytest

from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.raw_http import answer_then_close, read_answer

DEADLINE_SECONDS = 0.3
ANSWER_SECONDS = 5.0
SERVER = (
    f"[server]\nheader_timeout_seconds = {DEADLINE_SECONDS}\n"
    f"body_timeout_seconds = {DEADLINE_SECONDS}\n"
)
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: proxy\r\n\r\n"


def chat_request(model: str) -> bytes:
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


@pytest.fixture
def proxy(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> tuple[FakeUpstream, tuple[str, int]]:
    """The fake upstream, and the address of a proxy in front of it with short deadlines."""
    fake, upstream_url = fake_upstream
    url = httpx.URL(start_proxy(SERVER + single_upstream_config(upstream_url)))
    return fake, (url.host, url.port or 80)


def test_an_answer_slower_than_every_deadline_is_not_cut(
    proxy: tuple[FakeUpstream, tuple[str, int]],
) -> None:
    fake, address = proxy
    fake.slow_seconds = 4 * DEADLINE_SECONDS
    with socket.create_connection(address, timeout=ANSWER_SECONDS) as connection:
        connection.sendall(chat_request("slow-headers"))
        with connection.makefile("rb") as reader:
            answer = read_answer(reader)
    assert answer.status == 200 and orjson.loads(answer.body)["choices"]


def test_the_next_request_on_a_kept_alive_connection_has_the_header_deadline_too(
    proxy: tuple[FakeUpstream, tuple[str, int]],
) -> None:
    _, address = proxy
    with socket.create_connection(address, timeout=ANSWER_SECONDS) as connection:
        connection.sendall(HEALTH)
        with connection.makefile("rb") as reader:
            assert read_answer(reader).status == 200
        connection.sendall(HEALTH[:20])
        assert answer_then_close(connection, ANSWER_SECONDS).status == 408


def test_pipelined_requests_are_each_answered_in_order(
    proxy: tuple[FakeUpstream, tuple[str, int]],
) -> None:
    _, address = proxy
    with socket.create_connection(address, timeout=ANSWER_SECONDS) as connection:
        connection.sendall(chat_request("gpt-4o") + HEALTH)
        with connection.makefile("rb") as reader:
            chat, health = read_answer(reader), read_answer(reader)
    assert orjson.loads(chat.body)["choices"] and chat.status == 200
    assert orjson.loads(health.body) == {"status": "ok"}


def test_a_body_stalled_on_a_route_outside_v1_gets_the_servers_own_408(
    proxy: tuple[FakeUpstream, tuple[str, int]],
) -> None:
    _, address = proxy
    with socket.create_connection(address) as connection:
        connection.sendall(
            b"POST /admin/teams HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"name": '
        )
        answer = answer_then_close(connection, ANSWER_SECONDS)
    assert answer.status == 408
    assert orjson.loads(answer.body)["error"]["code"] == "request_timeout"
