"""Bad input on `/v1/*` gets a clear 4xx in OpenAI's error shape before any upstream call, and
its record says only that it was refused: no usage, no cost."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import orjson
import pytest

from proxy.errors import InvalidRequest
from proxy.metering.attribution import attribute
from proxy.metering.settle import NOTHING_BILLABLE
from proxy.metering.usage import Usage
from proxy.request_fields import MAX_CHOICES, MAX_MODEL_LENGTH
from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.fake_upstream import FAKE_MP3, FakeUpstream
from tests.support.records import RecordCollector

ProxyToFake = tuple[FakeUpstream, str]
HI = [{"role": "user", "content": "Hi"}]
CHAT = {"model": "gpt-4o", "messages": HI}
METERING_HEADERS = ["X-Metering-Trace-Id", "X-Metering-Parent-Id", "X-Metering-Tags"]
AUDIO = {"file": ("hello.mp3", FAKE_MP3, "audio/mpeg")}


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error of an answer in OpenAI's shape, with exactly its four fields."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert list(document) == ["error"]
    error: dict[str, Any] = document["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    return error


def assert_refusal_recorded(records: RecordCollector, response: httpx.Response) -> None:
    """The call's one record is the refusal: its status, no usage, nothing to pay."""
    record = records.only()
    assert record.request_id == response.headers["x-metering-request-id"]
    assert (record.status, record.usage, record.price) == (
        str(response.status_code),
        Usage(),
        NOTHING_BILLABLE,
    )


def post_json(proxy_url: str, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{proxy_url}/{path}", json=body)


def metering_value(header: str, odd: bytes) -> bytes:
    """A value for the header, odd only in `odd` (tags take `key=value` pairs)."""
    return b"k=" + odd if header.lower() == "x-metering-tags" else odd


def send_raw(proxy_url: str, request: bytes) -> bytes:
    """Send bytes no HTTP client would, and return the status line of the answer."""
    with socket.create_connection(("127.0.0.1", httpx.URL(proxy_url).port)) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


# Unreadable bodies


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "caf\xe9"}]}',
        orjson.dumps(CHAT).decode().encode("utf-16"),
        b'["gpt-4o"]',
        b'"gpt-4o"',
    ],
    ids=["latin-1 byte in a string", "utf-16", "array", "bare string"],
)
def test_body_that_is_not_a_utf8_json_object_is_a_400_recorded_without_usage(
    proxy_to_fake: ProxyToFake, records: RecordCollector, body: bytes
) -> None:
    fake, proxy_url = proxy_to_fake
    response = httpx.post(
        f"{proxy_url}/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert openai_error(response, 400)["code"] == "invalid_json"
    assert fake.requests == []
    assert_refusal_recorded(records, response)


def test_body_over_the_limit_is_a_413_recorded_without_usage(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    fake, upstream_url = fake_upstream
    proxy_url = start_proxy("max_body_bytes = 1000\n" + single_upstream_config(upstream_url))
    messages = [{"role": "user", "content": "x" * 2000}]
    response = post_json(proxy_url, "chat/completions", {**CHAT, "messages": messages})
    assert openai_error(response, 413)["code"] == "request_too_large"
    assert fake.requests == []
    assert_refusal_recorded(records, response)


def test_form_field_that_is_not_utf8_is_a_400(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    fake, proxy_url = proxy_to_fake
    response = httpx.post(
        f"{proxy_url}/audio/transcriptions", data={"model": b"whisper-\xff"}, files=AUDIO
    )
    assert "UTF-8" in openai_error(response, 400)["message"]
    assert fake.requests == []
    assert_refusal_recorded(records, response)


# Content types


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", orjson.dumps(CHAT)),
        ("application/x-www-form-urlencoded", b"model=gpt-4o&messages=Hi"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="model"'),
    ],
)
def test_a_json_endpoint_refuses_other_content_types_with_a_400(
    proxy_to_fake: ProxyToFake, records: RecordCollector, content_type: str, body: bytes
) -> None:
    fake, proxy_url = proxy_to_fake
    response = httpx.post(
        f"{proxy_url}/chat/completions", content=body, headers={"content-type": content_type}
    )
    error = openai_error(response, 400)
    assert error["code"] == "unsupported_content_type"
    assert "application/json" in error["message"]
    assert fake.requests == []
    assert_refusal_recorded(records, response)


def test_a_multipart_endpoint_refuses_json_with_a_400(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    response = post_json(proxy_url, "audio/transcriptions", {"model": "whisper-1"})
    error = openai_error(response, 400)
    assert error["code"] == "unsupported_content_type"
    assert "multipart/form-data" in error["message"]
    assert fake.requests == []


@pytest.mark.parametrize("content_type", [None, "Application/JSON; charset=utf-8"])
def test_json_is_read_without_a_content_type_or_with_parameters(
    proxy_to_fake: ProxyToFake, records: RecordCollector, content_type: str | None
) -> None:
    _, proxy_url = proxy_to_fake
    headers = {} if content_type is None else {"content-type": content_type}
    response = httpx.post(
        f"{proxy_url}/chat/completions", content=orjson.dumps(CHAT), headers=headers
    )
    assert response.status_code == 200
    assert records.only().model == "gpt-4o"


# The model


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("chat/completions", {"messages": HI}),
        ("chat/completions", {"model": None, "messages": HI}),
        ("chat/completions", {"model": "", "messages": HI}),
        ("completions", {"prompt": "Hi"}),
        ("embeddings", {"input": "Hi"}),
        ("audio/speech", {"input": "Hi", "voice": "alloy"}),
    ],
)
def test_missing_model_is_a_400_naming_it(
    proxy_to_fake: ProxyToFake, records: RecordCollector, path: str, body: dict[str, Any]
) -> None:
    fake, proxy_url = proxy_to_fake
    response = post_json(proxy_url, path, body)
    error = openai_error(response, 400)
    assert (error["param"], error["code"]) == ("model", "missing_required_parameter")
    assert fake.requests == []
    assert_refusal_recorded(records, response)


def test_missing_model_in_a_transcription_form_is_a_400(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    response = httpx.post(f"{proxy_url}/audio/transcriptions", files=AUDIO)
    assert openai_error(response, 400)["param"] == "model"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("moderations", {"input": "Hi"}),
        ("images/generations", {"prompt": "an otter"}),
        ("responses", {"prompt": {"id": "pmpt_stored"}, "input": "Hi"}),
    ],
)
def test_endpoints_that_default_the_model_are_forwarded_without_one(
    proxy_to_fake: ProxyToFake, path: str, body: dict[str, Any]
) -> None:
    fake, proxy_url = proxy_to_fake
    response = post_json(proxy_url, path, body)
    assert response.status_code == 200, response.text
    assert fake.last.path == f"/v1/{path}"


@pytest.mark.parametrize("model", [4, ["gpt-4o"], {"name": "gpt-4o"}, "x" * (MAX_MODEL_LENGTH + 1)])
def test_model_that_is_not_a_string_of_sane_length_is_a_400(
    proxy_to_fake: ProxyToFake, model: Any
) -> None:
    fake, proxy_url = proxy_to_fake
    response = post_json(proxy_url, "chat/completions", {**CHAT, "model": model})
    error = openai_error(response, 400)
    assert (error["param"], error["code"]) == ("model", "invalid_value")
    assert fake.requests == []


def test_model_no_upstream_serves_is_a_404_model_not_found(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    fake, upstream_url = fake_upstream
    proxy_url = start_proxy(single_upstream_config(upstream_url) + 'models = ["gpt-*"]\n')
    response = post_json(proxy_url, "chat/completions", {**CHAT, "model": "claude-x"})
    error = openai_error(response, 404)
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert fake.requests == []
    assert_refusal_recorded(records, response)


# How many choices


@pytest.mark.parametrize(
    "n", [0, -1, MAX_CHOICES + 1, 10**9, 10**30, 2.5, "3", True, [2]], ids=repr
)
def test_n_that_is_not_a_whole_number_up_to_the_cap_is_a_400(
    proxy_to_fake: ProxyToFake, records: RecordCollector, n: Any
) -> None:
    fake, proxy_url = proxy_to_fake
    response = post_json(proxy_url, "chat/completions", {**CHAT, "n": n})
    error = openai_error(response, 400)
    assert (error["param"], error["code"]) == ("n", "invalid_value")
    assert fake.requests == []
    assert_refusal_recorded(records, response)


@pytest.mark.parametrize("n", [None, 1, MAX_CHOICES])
def test_n_up_to_openais_cap_is_forwarded(proxy_to_fake: ProxyToFake, n: int | None) -> None:
    fake, proxy_url = proxy_to_fake
    response = post_json(proxy_url, "chat/completions", {**CHAT, "n": n})
    assert response.status_code == 200
    assert fake.last.json()["n"] == n


@pytest.mark.parametrize("n", ["two", "0", "1e3", "-1", "²"])
def test_n_in_a_form_that_is_not_its_digits_is_a_400(proxy_to_fake: ProxyToFake, n: str) -> None:
    fake, proxy_url = proxy_to_fake
    image = {"image": ("otter.png", b"\x89PNG\r\n\x1a\n", "image/png")}
    response = httpx.post(
        f"{proxy_url}/images/edits", data={"prompt": "a hat", "n": n}, files=image
    )
    assert openai_error(response, 400)["param"] == "n"
    assert fake.requests == []


# Metering headers


@pytest.mark.parametrize("header", METERING_HEADERS)
@pytest.mark.parametrize(
    "value",
    [b"a\nInjected: yes", b"a\rInjected: yes", b"a\x00b", b"a\x01b", b"a\x7fb"],
    ids=["LF", "CR", "NUL", "SOH", "DEL"],
)
def test_control_characters_in_metering_headers_never_reach_the_proxy(
    proxy_to_fake: ProxyToFake, records: RecordCollector, header: str, value: bytes
) -> None:
    fake, proxy_url = proxy_to_fake
    body = orjson.dumps(CHAT)
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        + f"{header}: ".encode()
        + metering_value(header, value)
        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )
    # The HTTP server (uvicorn's httptools, as `serve` runs it) refuses such a request whole.
    assert send_raw(proxy_url, request) == b"HTTP/1.1 400 Bad Request"
    assert post_json(proxy_url, "chat/completions", CHAT).status_code == 200
    assert records.only().status == "200"
    assert len(fake.requests) == 1


@pytest.mark.parametrize("header", METERING_HEADERS)
@pytest.mark.parametrize("value", [b"a\x00b", b"a\nb", b"a\x01b", b"a\x7fb", b"a\x1bb"])
def test_control_characters_in_metering_headers_are_refused_if_a_server_passes_them(
    header: str, value: bytes
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        attribute([(header.lower().encode(), metering_value(header, value))], {})
    assert raised.value.code == "invalid_metering_header"


@pytest.mark.parametrize("header", METERING_HEADERS)
@pytest.mark.parametrize(
    "value", [b"a\tb", b"caf\xe9", b"v" * 10_000], ids=["tab", "latin-1", "10 kB"]
)
def test_odd_metering_header_values_are_a_400_before_the_upstream(
    proxy_to_fake: ProxyToFake, records: RecordCollector, header: str, value: bytes
) -> None:
    fake, proxy_url = proxy_to_fake
    headers = {header.encode(): metering_value(header, value)}
    response = httpx.post(f"{proxy_url}/chat/completions", json=CHAT, headers=headers)
    error = openai_error(response, 400)
    assert error["code"] == "invalid_metering_header"
    assert header in error["message"] or header.lower() in error["message"]
    assert fake.requests == []
    assert_refusal_recorded(records, response)
