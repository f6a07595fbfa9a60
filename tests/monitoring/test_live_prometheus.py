"""A real Prometheus scrapes a running proxy after real traffic: every rule and dashboard query
parses, and every panel over the proxy's own metrics returns data."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.fake_upstream import FakeUpstream

REPOSITORY = Path(__file__).resolve().parents[2]
RULES = sorted((REPOSITORY / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((REPOSITORY / "grafana" / "dashboards").glob("*.json"))
# No alert fires here, so panels over ALERTS are empty.
NOT_YET_EXPORTED = ("ALERTS",)
# A budget on the team the test's calls are attributed to, so that the budget gauges exist.
BUDGETED = (
    "[alerts]\ncheck_seconds = 0.2\n"
    '[[teams]]\nname = "default"\n[teams.budget]\nperiod = "monthly"\nlimit_usd = "100"\n'
)
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${__range}": "1h",
}
HI = [{"role": "user", "content": "Hi"}]


def _prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        message = "prometheus not found: install Debian's `prometheus` package"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def prometheus_url(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, tmp_path: Path
) -> Iterator[str]:
    """Prometheus scraping a proxy (every second) that has served every kind of call."""
    binary = _prometheus_binary()
    _, upstream_url = fake_upstream
    proxy_url = start_proxy(
        "trace_idle_seconds = 0.5\n" + single_upstream_config(upstream_url) + BUDGETED
    ).removesuffix("/v1")
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULES],
        "scrape_configs": [
            {
                "job_name": "llm-metering-proxy",
                "static_configs": [{"targets": [proxy_url.removeprefix("http://")]}],
            }
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        # Counters first seen after the traffic would show no rate: scrape before it.
        _wait_for(url, "up == 1", "prometheus never scraped the proxy")
        _traffic(f"{proxy_url}/v1")
        _wait_for(url, _TRAFFIC_SEEN, "prometheus never saw the proxy's traffic")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, "prometheus exited"
        try:
            if httpx.get(f"{url}/-/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "prometheus did not become ready"
        time.sleep(0.1)


def _traffic(proxy_url: str) -> None:
    """Calls of every kind the panels show: streamed, traced, failing, unpriced, rate-limited."""
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-client", max_retries=0)
    for _ in range(4):
        root = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        parent = {"X-Metering-Parent-Id": root.headers["x-metering-request-id"]}
        client.chat.completions.create(model="gpt-4o", messages=HI, extra_headers=parent)
        list(client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True))
        client.chat.completions.create(model="house-model", messages=HI)  # unpriced
        client.chat.completions.create(  # cached input and reasoning tokens
            model="o3-mini",
            messages=HI,
            extra_headers={"x-fake-replay": "chat-o3-mini-reasoning-cached"},
        )
        for failing in ("rate-limited", "server-error"):
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(model=failing, messages=HI)
        time.sleep(1)


# Rates over the traffic, the recorded spend rates, the budget gauges and the finished traces.
_TRAFFIC_SEEN = (
    "sum(rate(llm_proxy_requests_total[1m])) and sum(llm_proxy_trace_calls_count) > 0"
    " and on() sum(team:llm_proxy_cost_usd:rate1h) > 0"
    " and on() count(llm_proxy_budget_spend_usd) > 0"
)


def _wait_for(url: str, query: str, failure: str) -> None:
    """Until `query` has a result."""
    deadline = time.monotonic() + 30
    while not _query(url, query)["data"]["result"]:
        assert time.monotonic() < deadline, failure
        time.sleep(0.25)


def _query(url: str, expression: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/api/v1/query", params={"query": expression}).json()
    return answer


def _rule_expressions() -> list[tuple[str, str]]:
    found = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or rule.get("alert")
                found.append((f"{path.name}:{name}", rule["expr"]))
    return found


def _panel_expressions() -> list[tuple[str, str]]:
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                if "expr" in target:
                    found.append((f"{path.name}:{panel['title']}", _substituted(target["expr"])))
    return found


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _substituted(expression: str) -> str:
    """Grafana's variables as Grafana would fill them: intervals, and `.*` for every filter."""
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return re.sub(r"\$\{?[A-Za-z_]+(?::[a-z]+)?\}?", ".*", expression)


def test_every_rule_and_panel_query_parses(prometheus_url: str) -> None:
    expressions = _rule_expressions() + _panel_expressions()
    assert len(expressions) > 20
    failures = {
        where: answer.get("error")
        for where, expression in expressions
        if (answer := _query(prometheus_url, expression))["status"] != "success"
    }
    assert failures == {}


def test_every_panel_over_the_proxy_metrics_returns_data(prometheus_url: str) -> None:
    empty = [
        where
        for where, expression in _panel_expressions()
        if not any(name in expression for name in NOT_YET_EXPORTED)
        and not _query(prometheus_url, expression)["data"]["result"]
    ]
    assert empty == [], "\n".join(empty)
