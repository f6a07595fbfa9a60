"""Calls are attributed to an end user, tags and an agent trace from headers and body."""

from __future__ import annotations

import openai
import pytest

from proxy.errors import InvalidRequest
from proxy.metering.attribution import MAX_TAGS, attribute
from tests.support.fake_upstream import FakeUpstream
from tests.support.records import RecordCollector

TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_HEX = "00f067aa0ba902b7"


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]


def test_end_user_from_user_or_safety_identifier() -> None:
    assert attribute([], {"user": "u-1"}).user == "u-1"
    assert attribute([], {"safety_identifier": "hash-9"}).user == "hash-9"
    assert attribute([], {"user": 42}).user is None


def test_tags_from_the_header() -> None:
    tags = attribute(headers(x_metering_tags="feature=search, env=prod"), {}).tags
    assert tags == {"feature": "search", "env": "prod"}


@pytest.mark.parametrize(
    "value",
    ["novalue", "k=v\r\nInjected: yes", "k=" + "v" * 200, "bad key=v", "k=a;b"],
)
def test_malformed_tags_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequest, match="X-Metering-Tags"):
        attribute(headers(x_metering_tags=value), {})


def test_too_many_tags_are_refused() -> None:
    value = ",".join(f"k{i}=v" for i in range(MAX_TAGS + 1))
    with pytest.raises(InvalidRequest, match="at most"):
        attribute(headers(x_metering_tags=value), {})


def test_non_ascii_metering_header_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="ASCII"):
        attribute([(b"x-metering-trace-id", "trace-é".encode())], {})


def test_traceparent_gives_trace_and_parent() -> None:
    result = attribute(headers(traceparent=f"00-{TRACE_HEX}-{SPAN_HEX}-01"), {})
    assert (result.trace_id, result.parent_id) == (TRACE_HEX, SPAN_HEX)


def test_invalid_traceparent_is_ignored() -> None:
    result = attribute(headers(traceparent="00-xyz-01"), {})
    assert (result.trace_id, result.parent_id) == (None, None)


def test_metering_headers_win_over_traceparent() -> None:
    result = attribute(
        headers(x_metering_trace_id="run-7", traceparent=f"00-{TRACE_HEX}-{SPAN_HEX}-01"), {}
    )
    assert (result.trace_id, result.parent_id) == ("run-7", SPAN_HEX)


def sdk(proxy_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy_url, api_key="sk-client", max_retries=0)


HI = [{"role": "user", "content": "Hi"}]


def test_agent_calls_join_the_trace_of_the_call_that_caused_them(
    proxy_to_fake: tuple[FakeUpstream, str], records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    client = sdk(proxy_url)
    root = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    root_id = root.headers["x-metering-request-id"]
    child = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI, extra_headers={"X-Metering-Parent-Id": root_id}
    )
    child_id = child.headers["x-metering-request-id"]
    client.embeddings.create(
        model="text-embedding-3-small", input="x", extra_headers={"X-Metering-Parent-Id": child_id}
    )
    first, second, third = records.wait_for(3)
    assert first.trace_id == second.trace_id == third.trace_id == root_id
    assert (first.parent_id, second.parent_id, third.parent_id) == (None, root_id, child_id)


def test_user_and_tags_reach_the_record(
    proxy_to_fake: tuple[FakeUpstream, str], records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).chat.completions.create(
        model="gpt-4o", messages=HI, user="end-user-1", extra_headers={"X-Metering-Tags": "f=a"}
    )
    record = records.only()
    assert (record.user, record.tags) == ("end-user-1", {"f": "a"})


def test_malformed_metering_header_is_a_400_in_openai_shape(
    proxy_to_fake: tuple[FakeUpstream, str], records: RecordCollector
) -> None:
    fake, proxy_url = proxy_to_fake
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(proxy_url).chat.completions.create(
            model="gpt-4o", messages=HI, extra_headers={"X-Metering-Tags": "oops"}
        )
    assert raised.value.code == "invalid_metering_header"
    assert fake.requests == []
    assert records.only().status == "400"
