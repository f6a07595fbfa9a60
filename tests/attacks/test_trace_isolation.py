"""Trace ids are chosen by clients: one team's trace headers must never reach another team's
trace, its reports or its per-trace limit. Through a real proxy (uvicorn, real sockets) with two
teams' proxy keys, `[trace_limits] max_calls = 3`, and every call priced."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.admin import ADMIN_ENVIRON, ADMIN_KEY, Admin
from tests.support.clock import START, FakeClock
from tests.support.fake_upstream import FakeUpstream

PRICED = '[prices."gpt-4o"]\ninput = 1000000\noutput = 1000000\n'
LIMITED = "[trace_limits]\nmax_calls = 3\n"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
CALL_COST = "18"  # the fake upstream's usage at PRICED
# Every call is made at START: the proxy runs on the test's clock.
WINDOW = {
    "since": (START - timedelta(days=1)).isoformat(),
    "until": (START + timedelta(days=1)).isoformat(),
}


@pytest.fixture
def proxy(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, clock: FakeClock
) -> str:
    _, upstream_url = fake_upstream
    config = single_upstream_config(upstream_url) + PRICED + LIMITED
    return start_proxy(config, ADMIN_ENVIRON, clock=clock)


@pytest.fixture
def keys(proxy: str) -> dict[str, str]:
    """A proxy key of team `alpha` and one of team `beta`."""
    admin = Admin(proxy)
    issued = {}
    for team in ("alpha", "beta"):
        admin.team(team)
        issued[team] = admin.key(team)["key"]
    return issued


def chat(proxy: str, key: str, **headers: str) -> httpx.Response:
    """A chat call; `headers` as keyword arguments, `_` for `-`."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    return httpx.post(
        f"{proxy}/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {key}", **sent},
        timeout=10,
    )


def top_traces(proxy: str, key: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{proxy.removesuffix('/v1')}/usage/top-traces",
        params=WINDOW,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    traces: list[dict[str, Any]] = answer.json()["data"]
    return traces


def stored(proxy: str, calls: int) -> None:
    """Wait until the ledger's traces hold `calls` calls (it writes in batches)."""
    deadline = time.monotonic() + 5
    while sum(trace["calls"] for trace in top_traces(proxy, ADMIN_KEY)) < calls:
        assert time.monotonic() < deadline, "the ledger did not store the calls in time"
        time.sleep(0.05)


def summary(traces: list[dict[str, Any]]) -> list[tuple[str, str, int, Decimal]]:
    return [(t["trace_id"], t["team"], t["calls"], Decimal(t["cost_usd"])) for t in traces]


def test_a_teams_top_traces_show_none_of_another_teams_calls_under_the_same_trace_id(
    proxy: str, keys: dict[str, str]
) -> None:
    # beta starts the trace id first: its row used to take alpha's calls and cost too.
    assert chat(proxy, keys["beta"], X_Metering_Trace_Id="shared").status_code == 200
    for _ in range(2):
        assert chat(proxy, keys["alpha"], X_Metering_Trace_Id="shared").status_code == 200
    stored(proxy, calls=3)

    assert summary(top_traces(proxy, keys["beta"])) == [("shared", "beta", 1, Decimal(CALL_COST))]
    assert summary(top_traces(proxy, keys["alpha"])) == [
        ("shared", "alpha", 2, 2 * Decimal(CALL_COST))
    ]


def test_another_team_cannot_use_up_a_teams_trace_call_limit(
    proxy: str, keys: dict[str, str], fake_upstream: tuple[FakeUpstream, str]
) -> None:
    for _ in range(3):
        assert chat(proxy, keys["beta"], X_Metering_Trace_Id="run-1").status_code == 200

    answer = chat(proxy, keys["alpha"], X_Metering_Trace_Id="run-1")

    assert answer.status_code == 200, answer.text
    assert len(fake_upstream[0].requests) == 4


def test_a_parent_id_naming_another_teams_call_does_not_count_against_its_trace_limit(
    proxy: str, keys: dict[str, str]
) -> None:
    root = chat(proxy, keys["alpha"]).headers["x-metering-request-id"]
    for _ in range(2):  # with the root, as many calls as the limit
        assert chat(proxy, keys["beta"], X_Metering_Parent_Id=root).status_code == 200

    child = chat(proxy, keys["alpha"], X_Metering_Parent_Id=root)

    assert child.status_code == 200, child.text


def test_a_parent_id_naming_another_teams_call_does_not_join_its_trace_in_the_ledger(
    proxy: str, keys: dict[str, str]
) -> None:
    root = chat(proxy, keys["alpha"]).headers["x-metering-request-id"]
    assert chat(proxy, keys["beta"], X_Metering_Parent_Id=root).status_code == 200
    stored(proxy, calls=2)

    assert summary(top_traces(proxy, keys["alpha"])) == [(root, "alpha", 1, Decimal(CALL_COST))]
