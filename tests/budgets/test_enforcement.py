"""Hard budgets through the real OpenAI SDK: refused before the upstream is called, reset at the
period start, and never overspent by concurrent calls through two replicas on one Postgres."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import openai
import pytest

from proxy.ledger.migrations import upgrade_to_head
from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.admin import ADMIN_ENVIRON, Admin
from tests.support.clock import FakeClock
from tests.support.fake_upstream import FakeUpstream
from tests.support.records import RecordCollector

HI = [{"role": "user", "content": "Hi"}]
KEY = "sk-mp-budget-test-key-0123456789abcdefghijklmnopq"
# $1 a token, so that the fake upstream's calls (12 input + 6 output tokens) cost $18 each;
# max_tokens=16 makes each call reserve about $24 before it is forwarded.
PRICED = '[prices."gpt-4o"]\ninput = 1000000\noutput = 1000000\n'
CALL_COST = Decimal(18)


def config(upstream_url: str, limit: str, period: str = "daily") -> str:
    return (
        single_upstream_config(upstream_url)
        + PRICED
        + "[access]\npoll_seconds = 0.1\n"
        + '[[teams]]\nname = "search"\n[[teams.keys]]\nkey_env = "SEARCH_KEY"\n'
        + f'[teams.budget]\nperiod = "{period}"\nlimit_usd = "{limit}"\nhard = true\n'
    )


def chat(proxy_url: str, max_retries: int = 0) -> None:
    client = openai.OpenAI(base_url=proxy_url, api_key=KEY, max_retries=max_retries)
    client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=16)  # type: ignore[arg-type]


def spend(proxy_url: str) -> dict[str, str]:
    document: dict[str, str] = Admin(proxy_url).call("GET", "/admin/teams/search/spend")
    return document


def settled_spend(proxy_url: str, calls: int) -> Decimal:
    """The team's spend once the ledger holds `calls` calls."""
    deadline = time.monotonic() + 10
    while True:
        document = spend(proxy_url)
        if int(document["calls"]) >= calls or time.monotonic() > deadline:
            return Decimal(document["spend_usd"])
        time.sleep(0.05)


def test_a_team_over_its_hard_limit_is_refused_before_the_upstream_sees_the_call(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    fake, upstream_url = fake_upstream
    proxy = start_proxy(config(upstream_url, "30"), {"SEARCH_KEY": KEY, **ADMIN_ENVIRON})
    chat(proxy)

    # The SDK would retry an ordinary 429; this one says it must not (x-should-retry: false).
    with pytest.raises(openai.RateLimitError) as refused:
        chat(proxy, max_retries=2)

    assert refused.value.code == "budget_exceeded"
    assert refused.value.response.headers["x-metering-budget-resets-at"].endswith("Z")
    assert len(fake.requests) == 1
    assert [record.status for record in records.wait_for(2)] == ["200", "429"]


def test_spend_resets_at_the_start_of_the_next_period(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    fake, upstream_url = fake_upstream
    clock = FakeClock(datetime(2026, 11, 25, 23, 59, tzinfo=UTC))
    proxy = start_proxy(config(upstream_url, "30"), {"SEARCH_KEY": KEY, **ADMIN_ENVIRON}, clock)
    chat(proxy)
    with pytest.raises(openai.RateLimitError):
        chat(proxy)

    clock.set(datetime(2026, 11, 26, 0, 0, tzinfo=UTC))

    chat(proxy)
    assert len(fake.requests) == 2
    assert spend(proxy)["period_start"].startswith("2026-11-26T00:00:00")


def test_unpriced_calls_are_counted_beside_the_spend_not_as_free(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    _, upstream_url = fake_upstream
    proxy = start_proxy(config(upstream_url, "1000"), {"SEARCH_KEY": KEY, **ADMIN_ENVIRON})
    client = openai.OpenAI(base_url=proxy, api_key=KEY, max_retries=0)
    client.chat.completions.create(model="house-model", messages=HI)  # type: ignore[arg-type]
    chat(proxy)

    settled_spend(proxy, calls=2)
    document = spend(proxy)

    assert (document["calls"], document["unpriced_calls"]) == (2, 1)
    assert Decimal(document["spend_usd"]) == CALL_COST


async def test_fifty_concurrent_calls_through_two_replicas_never_overspend(
    # The database first, so that it is dropped after the replicas stop, not under them.
    postgres_database_url: str,
    fake_upstream: tuple[FakeUpstream, str],
    start_proxy: ProxyFactory,
) -> None:
    fake, upstream_url = fake_upstream
    await upgrade_to_head(postgres_database_url)
    environ = {"SEARCH_KEY": KEY, "METERING_DATABASE_URL": postgres_database_url, **ADMIN_ENVIRON}
    limit = Decimal(180)  # ten calls' worth
    replicas = [start_proxy(config(upstream_url, str(limit)), environ) for _ in range(2)]

    def call(number: int) -> bool:
        try:
            chat(replicas[number % 2])
        except openai.RateLimitError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=50) as pool:
        admitted = sum(pool.map(call, range(50)))
    # Then one call after another, alternating replicas, until the budget refuses them all.
    number = 0
    while call(number) or call(number + 1):
        admitted += 1
        number += 2

    spent = settled_spend(replicas[0], len(fake.requests))
    assert len(fake.requests) == admitted
    assert spent == admitted * CALL_COST
    assert spent <= limit
    # Used up to within one call's reservation: the limit holds without starving the team.
    assert admitted >= 9


def test_a_key_budget_stops_that_key_and_not_the_rest_of_its_team(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    _, upstream_url = fake_upstream
    proxy = start_proxy(single_upstream_config(upstream_url) + PRICED, ADMIN_ENVIRON)
    admin = Admin(proxy)
    admin.team("search")
    capped, free = admin.key("search"), admin.key("search")
    admin.call(
        "PUT",
        f"/admin/keys/{capped['id']}/budget",
        {"period": "monthly", "limit_usd": "30", "hard": True},
    )

    def call(key: str) -> None:
        client = openai.OpenAI(base_url=proxy, api_key=key, max_retries=0)
        client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=16)  # type: ignore[arg-type]

    call(capped["key"])
    with pytest.raises(openai.RateLimitError, match="budget"):
        call(capped["key"])
    call(free["key"])
    call(free["key"])


def test_a_runaway_agent_trace_is_stopped_at_its_call_limit(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    fake, upstream_url = fake_upstream
    proxy = start_proxy(single_upstream_config(upstream_url) + "[trace_limits]\nmax_calls = 3\n")
    client = openai.OpenAI(base_url=proxy, api_key="sk-client", max_retries=0)
    trace = {"X-Metering-Trace-Id": "agent-run-1"}

    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=HI, extra_headers=trace)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=HI, extra_headers=trace)  # type: ignore[arg-type]
    client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]

    assert refused.value.code == "trace_budget_exceeded"
    assert len(fake.requests) == 4  # three of the trace, one outside it


def test_a_trace_is_stopped_once_it_has_cost_its_limit(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    _, upstream_url = fake_upstream
    proxy = start_proxy(
        single_upstream_config(upstream_url) + PRICED + '[trace_limits]\nmax_cost_usd = "30"\n'
    )
    client = openai.OpenAI(base_url=proxy, api_key="sk-client", max_retries=0)
    trace = {"X-Metering-Trace-Id": "agent-run-2"}

    client.chat.completions.create(model="gpt-4o", messages=HI, extra_headers=trace)  # type: ignore[arg-type]
    client.chat.completions.create(model="gpt-4o", messages=HI, extra_headers=trace)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError, match=r"\$36"):
        client.chat.completions.create(model="gpt-4o", messages=HI, extra_headers=trace)  # type: ignore[arg-type]
