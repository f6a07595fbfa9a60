"""Slow clients (slowloris) against a real `serve` process whose fd limit is 256.

Requests whose headers never end are cut at the header deadline, connections past the cap are
told so at once with a 503, and a body that stops arriving gets a 408, recorded once: so a flood
of half-sent requests larger than the fd limit cannot keep a real client out for long, and
`/healthz` answers throughout.
"""

from __future__ import annotations

import resource
import select
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.server.descriptors import RESERVED_DESCRIPTORS
from tests.conftest import single_upstream_config
from tests.support.databases import sqlite_url
from tests.support.fake_upstream import FakeUpstream
from tests.support.process import ProxyProcess
from tests.support.raw_http import RawAnswer, answer_then_close
from tests.support.servers import serve_in_thread
from tests.support.waiting import comes_true

DESCRIPTORS = 256
HALF_SENT = 300  # more connections than the process has descriptors
HEADER_SECONDS = 0.5
BODY_SECONDS = 0.5
WHOLE_BODY_SECONDS = 1.0
PROMPT_SECONDS = 2.0  # an answer slower than this counts as a hang
ANSWER_SECONDS = WHOLE_BODY_SECONDS + PROMPT_SECONDS  # for an answer that waits on a deadline
HALF_SENT_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: appl"
CHAT = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]})
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class SlowProxy:
    process: ProxyProcess
    upstream: FakeUpstream
    ledger: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.process.port)


def _few_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowProxy]:
    """One proxy for the module (a `serve` takes seconds to start), with short deadlines."""
    directory = tmp_path_factory.mktemp("slow-clients")
    fake = FakeUpstream()
    with serve_in_thread(fake) as upstream_url:
        config = directory / "proxy.toml"
        config.write_text(
            "[server]\n"
            f"header_timeout_seconds = {HEADER_SECONDS}\n"
            f"body_timeout_seconds = {BODY_SECONDS}\n"
            f"whole_body_timeout_seconds = {WHOLE_BODY_SECONDS}\n"
            + single_upstream_config(f"{upstream_url}/v1")
            + f'[ledger]\njournal_dir = "{directory / "journal"}"\n'
        )
        process = ProxyProcess(
            "--config",
            str(config),
            cwd=directory,
            environ={"METERING_DATABASE_URL": sqlite_url(directory)},
            preexec_fn=_few_descriptors,
        )
        try:
            process.wait_ready()
            yield SlowProxy(process, fake, directory / "ledger.db")
        finally:
            assert process.terminate() == 0, process.log.read_text()


@pytest.fixture
def recovered(proxy: SlowProxy) -> SlowProxy:
    """The proxy once it serves again, whatever the test before left behind."""
    assert comes_true(lambda: _health(proxy) == 200), proxy.process.log.read_text()
    return proxy


def _health(proxy: SlowProxy) -> int:
    return httpx.get(f"{proxy.process.url}/healthz", timeout=PROMPT_SECONDS).status_code


def chat(proxy: SlowProxy) -> httpx.Response:
    """One chat call; a transport error or an answer slower than PROMPT_SECONDS fails the test."""
    url = f"{proxy.process.url}/v1/chat/completions"
    return httpx.post(url, content=CHAT, headers=JSON, timeout=PROMPT_SECONDS)


@contextmanager
def half_sent_requests(proxy: SlowProxy, count: int) -> Iterator[None]:
    """`count` connections, each with the start of a request whose headers never end."""
    with ExitStack() as connections:
        for _ in range(count):
            connection = connections.enter_context(socket.create_connection(proxy.address))
            connection.sendall(HALF_SENT_HEAD)
        yield


def openai_error(body: bytes) -> dict[str, Any]:
    """The error of an answer in OpenAI's shape, with exactly its four fields."""
    document = orjson.loads(body)
    assert list(document) == ["error"]
    error: dict[str, Any] = document["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def assert_request_timeout(answer: RawAnswer) -> None:
    assert answer.status == 408, answer
    error = openai_error(answer.body)
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")


def settled_with_status(proxy: SlowProxy, status: str) -> float:
    """How many calls the proxy settled with `status`, from its `/metrics`."""
    text = httpx.get(f"{proxy.process.url}/metrics", timeout=PROMPT_SECONDS).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llm_proxy_requests_total" and sample.labels.get("status") == status
    )


def ledger_statuses(proxy: SlowProxy, request_id: str) -> list[str]:
    with sqlite3.connect(proxy.ledger) as database:
        query = "SELECT status FROM usage_records WHERE request_id = ?"
        return [status for (status,) in database.execute(query, (request_id,))]


def assert_recorded_once_as_timeout(proxy: SlowProxy, answer: RawAnswer, before: float) -> None:
    """The call's record is in the ledger with status 408, and it was settled only once."""
    request_id = answer.headers["x-metering-request-id"]
    assert comes_true(lambda: ledger_statuses(proxy, request_id) == ["408"])
    assert settled_with_status(proxy, "408") == before + 1
    assert not comes_true(lambda: settled_with_status(proxy, "408") > before + 1, seconds=0.3)


# Headers


def test_a_request_whose_headers_never_end_gets_408_and_is_closed(recovered: SlowProxy) -> None:
    with socket.create_connection(recovered.address) as connection:
        connection.sendall(HALF_SENT_HEAD)
        assert_request_timeout(answer_then_close(connection, ANSWER_SECONDS))


def test_headers_trickled_in_get_408_at_the_header_deadline_however_steady(
    recovered: SlowProxy,
) -> None:
    with socket.create_connection(recovered.address) as connection:
        until = time.monotonic() + ANSWER_SECONDS
        for byte in HALF_SENT_HEAD + b"x" * 200:
            if select.select([connection], [], [], HEADER_SECONDS / 10)[0]:
                break
            assert time.monotonic() < until, "the trickle was never cut"
            connection.sendall(bytes([byte]))
        assert_request_timeout(answer_then_close(connection, ANSWER_SECONDS))


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    recovered: SlowProxy,
) -> None:
    with socket.create_connection(recovered.address) as connection:
        connection.settimeout(ANSWER_SECONDS)
        assert connection.recv(65536) == b""


# The connection cap


def test_serve_lowers_the_connection_cap_to_what_its_fd_limit_holds(proxy: SlowProxy) -> None:
    cap = (DESCRIPTORS - RESERVED_DESCRIPTORS) // 2
    assert f"max_connections lowered from 10000 to {cap} " in proxy.process.log.read_text()


def test_a_client_past_the_connection_cap_gets_a_prompt_503_in_openai_shape(
    recovered: SlowProxy,
) -> None:
    with half_sent_requests(recovered, HALF_SENT):
        response = chat(recovered)
    assert response.status_code == 503, response.text
    error = openai_error(response.content)
    assert (error["type"], error["code"]) == ("server_error", "too_many_connections")
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["connection"] == "close"


def test_half_sent_requests_past_the_fd_limit_are_cut_so_a_client_is_then_served(
    recovered: SlowProxy,
) -> None:
    statuses = []
    with half_sent_requests(recovered, HALF_SENT):
        deadline = time.monotonic() + 10 * HEADER_SECONDS
        while not statuses or statuses[-1] != 200:
            assert time.monotonic() < deadline, statuses
            response = chat(recovered)
            statuses.append(response.status_code)
            assert response.status_code in (200, 503), response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_healthz_answers_throughout_a_flood_of_half_sent_requests(recovered: SlowProxy) -> None:
    statuses = []
    with half_sent_requests(recovered, HALF_SENT):
        until = time.monotonic() + 3 * HEADER_SECONDS
        while time.monotonic() < until:
            statuses.append(_health(recovered))
            time.sleep(0.05)
        statuses.append(_health(recovered))
    assert set(statuses) <= {200, 503} and statuses[-1] == 200, statuses
    assert recovered.process.running


# Bodies


def test_a_body_that_stops_arriving_gets_408_and_is_recorded_once(recovered: SlowProxy) -> None:
    before = settled_with_status(recovered, "408")
    with socket.create_connection(recovered.address) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(CHAT)
            + CHAT[: len(CHAT) // 2]
        )
        answer = answer_then_close(connection, ANSWER_SECONDS)
    assert_request_timeout(answer)
    assert_recorded_once_as_timeout(recovered, answer, before)


def test_a_body_trickled_past_the_whole_body_deadline_gets_408(recovered: SlowProxy) -> None:
    padded = CHAT[:-1] + b" " * 200 + b"}"
    with socket.create_connection(recovered.address) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(padded)
        )
        # A byte at a time, each well within the silence allowed between two chunks.
        until = time.monotonic() + ANSWER_SECONDS
        for byte in padded:
            if select.select([connection], [], [], BODY_SECONDS / 3)[0]:
                break
            assert time.monotonic() < until, "the trickle was never cut"
            connection.sendall(bytes([byte]))
        assert_request_timeout(answer_then_close(connection, ANSWER_SECONDS))


def test_a_slow_but_steady_streamed_upload_goes_through(recovered: SlowProxy) -> None:
    chunks = [b"%d" % number * 1000 for number in range(8)]

    def steadily() -> Iterator[bytes]:
        # In all longer than the whole-body deadline, which a streamed upload does not have.
        for chunk in chunks:
            time.sleep(WHOLE_BODY_SECONDS / 5)
            yield chunk

    url = f"{recovered.process.url}/v1/files"
    response = httpx.post(url, content=steadily(), timeout=PROMPT_SECONDS)
    assert response.status_code == 200, response.text
    assert recovered.upstream.last.body == b"".join(chunks)


def test_a_streamed_upload_that_stops_gets_408_and_is_recorded_once(
    recovered: SlowProxy,
) -> None:
    before = settled_with_status(recovered, "408")
    with socket.create_connection(recovered.address) as connection:
        connection.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: proxy\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        answer = answer_then_close(connection, ANSWER_SECONDS)
    assert_request_timeout(answer)
    assert_recorded_once_as_timeout(recovered, answer, before)
