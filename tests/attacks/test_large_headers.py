"""A request whose headers never stop growing: httptools keeps whatever comes, so without a bound
one client could fill the proxy's memory with a single request's headers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import single_upstream_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.process import serving
from tests.support.raw_http import answer_then_close

MAX_HEADER_BYTES = 16_384
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
LINE = b"X-Padding: " + b"a" * 1_000 + b"\r\n"


@pytest.fixture
def proxy_url(tmp_path: Path, fake_upstream: tuple[FakeUpstream, str]) -> Iterator[str]:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"[server]\nmax_header_bytes = {MAX_HEADER_BYTES}\n"
        f"{single_upstream_config(fake_upstream[1])}"
        f'[ledger]\njournal_dir = "{tmp_path / "journal"}"\n'
    )
    with serving("--config", str(config), cwd=tmp_path) as url:
        yield url


def test_headers_past_the_bound_get_431_in_openai_shape_and_the_connection_closes(
    proxy_url: str,
) -> None:
    port = int(proxy_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(HEAD)
        try:  # a megabyte of headers, which the proxy stops reading well before the end
            for _ in range(1_000):
                connection.sendall(LINE)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = answer_then_close(connection, seconds=5)

    assert answer.status == 431
    assert httpx.Response(431, content=answer.body).json()["error"] == {
        "message": "The request's headers are too large.",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_headers_too_large",
    }


def test_headers_within_the_bound_are_served(proxy_url: str) -> None:
    padding = {f"x-padding-{number}": "a" * 1_000 for number in range(10)}  # 10 KB
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}

    answer = httpx.post(f"{proxy_url}/v1/chat/completions", json=body, headers=padding)

    assert answer.status_code == 200
