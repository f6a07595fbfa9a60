"""Upstream faults injected through the proxy: each is answered promptly, settles exactly one
record, and leaves the proxy serving.

A fault before the answer starts reaches the client as the upstream's own error or as the proxy's
502/504 in OpenAI's error shape. Once the answer has started its status is gone: the client's
connection is cut, as the upstream's was, and the record says 502 or 504 and keeps the usage the
tap saw up to the cut. A storm of concurrent 429s reaches every caller as it was, one record each,
and the proxy adds no retries to it. The faulty upstream serves only the fault's model; every
other model goes to a healthy fake, which is how each test shows that the proxy carries on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from proxy.metering import prompt_tokens, tokens
from proxy.metering.usage import Usage
from tests.conftest import ProxyFactory
from tests.support.fake_upstream import STREAM_CHUNKS, FakeUpstream
from tests.support.process import free_port
from tests.support.records import RecordCollector
from tests.support.resetting_upstream import resetting_upstream

PROMPTLY = 5.0
READ_TIMEOUT = 1.0  # below the fake's `slow_seconds`, so `slow-headers` and `held-stream` time out
HI = [{"role": "user", "content": "Hi"}]
STORM = 50


def _proxy_error(message: str, code: str) -> dict[str, Any]:
    return {"message": message, "type": "server_error", "param": None, "code": code}


@dataclass(frozen=True)
class EarlyFault:
    """A fault before the answer starts, and the error the client gets for it."""

    base_url: Callable[[str], str]  # of the faulty upstream, given the healthy fake's
    model: str
    status: int
    error: dict[str, Any]


def _healthy(fake_url: str) -> str:
    return fake_url


EARLY_FAULTS = {
    "connect-refused": EarlyFault(
        lambda _: f"http://127.0.0.1:{free_port()}/v1",
        "gpt-4o",
        502,
        _proxy_error("Could not connect to the upstream 'faulty'.", "upstream_unreachable"),
    ),
    "dns-failure": EarlyFault(
        lambda _: "http://no-such-host.invalid/v1",
        "gpt-4o",
        502,
        _proxy_error(
            "Could not resolve the host of the upstream 'faulty'.", "upstream_unreachable"
        ),
    ),
    "tls-to-plain-http": EarlyFault(
        lambda fake_url: fake_url.replace("http://", "https://", 1),
        "gpt-4o",
        502,
        _proxy_error(
            "The TLS handshake with the upstream 'faulty' failed.", "upstream_unreachable"
        ),
    ),
    "slow-first-byte": EarlyFault(
        _healthy,
        "slow-headers",
        504,
        _proxy_error("The upstream 'faulty' did not answer in time.", "upstream_timeout"),
    ),
    "server-error": EarlyFault(
        _healthy,
        "server-error",
        500,
        {
            "message": "The server had an error.",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    ),
}


@dataclass(frozen=True)
class MidAnswerFault:
    """A fault once the answer has started, and what the client and the record see of it."""

    model: str
    stream: bool
    status: str
    visible: bytes  # in what reached the client before the cut
    output_seen: str  # the generated text among it
    resets: bool = False  # served by the resetting upstream, not the fake


MID_ANSWER_FAULTS = {
    "reset-mid-stream": MidAnswerFault(
        "gpt-4o", True, "502", STREAM_CHUNKS[0].encode(), STREAM_CHUNKS[0], resets=True
    ),
    "dropped-mid-stream": MidAnswerFault(
        "broken-stream", True, "502", STREAM_CHUNKS[0].encode(), STREAM_CHUNKS[0]
    ),
    "stalled-mid-stream": MidAnswerFault(
        "held-stream", True, "504", STREAM_CHUNKS[0].encode(), STREAM_CHUNKS[0]
    ),
    # Half a JSON body: nothing in it can be read, so only the prompt is counted.
    "truncated-body": MidAnswerFault("truncated-body", False, "502", b'"chatcmpl-fake"', ""),
}


def _config(faulty_url: str, model: str, fake_url: str) -> str:
    return (
        f"[timeouts]\nread = {READ_TIMEOUT}\n"
        f'[[upstreams]]\nname = "faulty"\nbase_url = "{faulty_url}"\nmodels = ["{model}"]\n'
        f'[[upstreams]]\nname = "fake"\nbase_url = "{fake_url}"\n'
    )


@pytest.fixture(params=list(EARLY_FAULTS))
def early_fault(
    request: pytest.FixtureRequest,
    fake_upstream: tuple[FakeUpstream, str],
    start_proxy: ProxyFactory,
) -> tuple[EarlyFault, str]:
    """A fault before the answer; the proxy's URL."""
    fault = EARLY_FAULTS[request.param]
    _, fake_url = fake_upstream
    return fault, start_proxy(_config(fault.base_url(fake_url), fault.model, fake_url))


@pytest.fixture(params=list(MID_ANSWER_FAULTS))
def mid_answer_fault(
    request: pytest.FixtureRequest,
    fake_upstream: tuple[FakeUpstream, str],
    start_proxy: ProxyFactory,
) -> Iterator[tuple[MidAnswerFault, str, Callable[[], None]]]:
    """A fault mid-answer; the proxy's URL; what to call once the client has the first bytes."""
    fault = MID_ANSWER_FAULTS[request.param]
    _, fake_url = fake_upstream
    with resetting_upstream() as (resetting, resetting_url):
        faulty_url = resetting_url if fault.resets else fake_url
        yield fault, start_proxy(_config(faulty_url, fault.model, fake_url)), resetting.reset


def _call(proxy_url: str, model: str) -> httpx.Response:
    return httpx.post(
        f"{proxy_url}/chat/completions",
        json={"model": model, "messages": HI},
        timeout=PROMPTLY * 2,
    )


def _read_until_cut(
    proxy_url: str, fault: MidAnswerFault, after_first_bytes: Callable[[], None]
) -> tuple[int, bytes]:
    """The status and the bytes the client got before its connection was cut."""
    request = {"model": fault.model, "messages": HI, "stream": fault.stream}
    with httpx.stream(
        "POST", f"{proxy_url}/chat/completions", json=request, timeout=PROMPTLY * 2
    ) as response:
        chunks = response.iter_raw()
        received = next(chunks)
        after_first_bytes()
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in chunks:
                received += chunk
    return response.status_code, received


def _assert_serves_normally(proxy_url: str) -> None:
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-client", max_retries=0)
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "".join(STREAM_CHUNKS)
    health = httpx.get(f"{proxy_url.removesuffix('/v1')}/healthz")
    assert health.json() == {"status": "ok"}


def test_a_fault_before_the_answer_is_answered_promptly_in_openai_shape(
    early_fault: tuple[EarlyFault, str],
) -> None:
    fault, proxy_url = early_fault
    started = time.monotonic()
    response = _call(proxy_url, fault.model)
    assert time.monotonic() - started < PROMPTLY
    assert response.status_code == fault.status
    assert response.json() == {"error": fault.error}


def test_a_fault_before_the_answer_settles_one_record_of_its_status_and_no_usage(
    early_fault: tuple[EarlyFault, str], records: RecordCollector
) -> None:
    fault, proxy_url = early_fault
    response = _call(proxy_url, fault.model)
    record = records.only()
    assert record.request_id == response.headers["x-metering-request-id"]
    assert (record.status, record.upstream) == (str(fault.status), "faulty")
    assert (record.usage, record.cost_usd) == (Usage(), Decimal(0))


def test_the_proxy_serves_normally_after_a_fault_before_the_answer(
    early_fault: tuple[EarlyFault, str],
) -> None:
    fault, proxy_url = early_fault
    _call(proxy_url, fault.model)
    _assert_serves_normally(proxy_url)


def test_a_fault_mid_answer_cuts_the_client_connection_promptly(
    mid_answer_fault: tuple[MidAnswerFault, str, Callable[[], None]],
) -> None:
    fault, proxy_url, after_first_bytes = mid_answer_fault
    started = time.monotonic()
    status, received = _read_until_cut(proxy_url, fault, after_first_bytes)
    assert time.monotonic() - started < PROMPTLY
    assert status == 200
    assert fault.visible in received


def test_a_fault_mid_answer_settles_one_record_of_its_status_and_the_usage_seen(
    mid_answer_fault: tuple[MidAnswerFault, str, Callable[[], None]], records: RecordCollector
) -> None:
    fault, proxy_url, after_first_bytes = mid_answer_fault
    _read_until_cut(proxy_url, fault, after_first_bytes)
    record = records.only()
    assert (record.status, record.upstream) == (fault.status, "faulty")
    assert record.usage == Usage(
        input_tokens=prompt_tokens.count_chat_prompt(fault.model, HI, None),
        output_tokens=tokens.count_text(fault.model, fault.output_seen),
        estimated=True,
    )


def test_the_proxy_serves_normally_after_a_fault_mid_answer(
    mid_answer_fault: tuple[MidAnswerFault, str, Callable[[], None]],
) -> None:
    fault, proxy_url, after_first_bytes = mid_answer_fault
    _read_until_cut(proxy_url, fault, after_first_bytes)
    _assert_serves_normally(proxy_url)


@dataclass(frozen=True)
class Storm:
    proxy_url: str
    fake: FakeUpstream
    responses: list[httpx.Response]
    seconds: float


@pytest.fixture
async def rate_limit_storm(proxy_to_fake: tuple[FakeUpstream, str]) -> Storm:
    """`STORM` concurrent calls, every one answered 429 by the upstream."""
    fake, proxy_url = proxy_to_fake
    request = {"model": "rate-limited", "messages": HI}
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=PROMPTLY * 2) as client:
        calls = (client.post(f"{proxy_url}/chat/completions", json=request) for _ in range(STORM))
        responses = await asyncio.gather(*calls)
    return Storm(proxy_url, fake, responses, time.monotonic() - started)


def test_a_429_storm_gives_every_caller_the_upstreams_429_promptly(rate_limit_storm: Storm) -> None:
    assert rate_limit_storm.seconds < PROMPTLY
    responses = rate_limit_storm.responses
    assert [response.status_code for response in responses] == [429] * STORM
    assert {response.json()["error"]["code"] for response in responses} == {"rate_limit_exceeded"}
    assert {response.headers["retry-after"] for response in responses} == {"7"}


def test_a_429_storm_is_not_amplified_by_retries(rate_limit_storm: Storm) -> None:
    assert len(rate_limit_storm.fake.requests) == STORM


def test_a_429_storm_settles_one_429_record_per_call(
    rate_limit_storm: Storm, records: RecordCollector
) -> None:
    settled = records.exactly(STORM)
    answered = {
        response.headers["x-metering-request-id"] for response in rate_limit_storm.responses
    }
    assert {record.request_id for record in settled} == answered
    assert {record.status for record in settled} == {"429"}


def test_the_proxy_serves_normally_after_a_429_storm(rate_limit_storm: Storm) -> None:
    _assert_serves_normally(rate_limit_storm.proxy_url)
