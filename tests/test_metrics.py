"""The settled records feed the Prometheus metrics at /metrics."""

from __future__ import annotations

import time

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.records import RecordCollector

HI = [{"role": "user", "content": "Hi"}]


def samples(proxy_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(proxy_url.removesuffix("/v1") + "/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(proxy_url: str, name: str, **labels: str) -> float:
    return samples(proxy_url).get((name, frozenset(labels.items())), 0.0)


def test_requests_tokens_and_cost_are_counted(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    _, upstream_url = fake_upstream
    proxy_url = start_proxy(single_upstream_config(upstream_url))
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-x", max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", messages=HI)
    (first, second) = records.wait_for(2)
    labels = {"team": "default", "model": "gpt-4o", "upstream": "fake"}
    assert (
        value(proxy_url, "llm_proxy_requests_total", **labels, endpoint="chat", status="200") == 2
    )
    assert value(proxy_url, "llm_proxy_tokens_total", **labels, kind="input") == 24
    assert value(proxy_url, "llm_proxy_tokens_total", **labels, kind="output") == 12
    expected_cost = float(first.cost_usd or 0) + float(second.cost_usd or 0)
    assert expected_cost > 0
    assert abs(value(proxy_url, "llm_proxy_cost_usd_total", **labels) - expected_cost) < 1e-12


def test_unpriced_calls_are_counted_not_added_as_zero(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    _, upstream_url = fake_upstream
    proxy_url = start_proxy(single_upstream_config(upstream_url))
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-x", max_retries=0)
    client.chat.completions.create(model="my-private-model", messages=HI)
    assert records.only().price is None
    assert value(proxy_url, "llm_proxy_unpriced_requests_total", model="my-private-model") == 1
    cost_labels = {"team": "default", "model": "my-private-model", "upstream": "fake"}
    assert ("llm_proxy_cost_usd_total", frozenset(cost_labels.items())) not in samples(proxy_url)


def test_finished_traces_are_observed(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    _, upstream_url = fake_upstream
    proxy_url = start_proxy("trace_idle_seconds = 0.2\n" + single_upstream_config(upstream_url))
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-x", max_retries=0)
    root = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    parent = {"X-Metering-Parent-Id": root.headers["x-metering-request-id"]}
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o", messages=HI, extra_headers=parent)
    records.wait_for(3)
    deadline = time.monotonic() + 5
    while value(proxy_url, "llm_proxy_trace_calls_count") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert value(proxy_url, "llm_proxy_trace_calls_count") == 1
    assert value(proxy_url, "llm_proxy_trace_calls_sum") == 3
