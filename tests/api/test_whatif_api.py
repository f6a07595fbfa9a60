"""`/usage/what-if` on a real server: the ledger's usage repriced under a scenario."""

from __future__ import annotations

from datetime import timedelta

import httpx

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.rows import row_of
from proxy.ledger.store import LedgerStore
from tests.conftest import ProxyFactory
from tests.ledger.test_writer import CREATED_AT, record

PRICES = """
[prices."gpt-4o"]
input = 2.5
cached_input = 1.25
output = 10
[prices."gpt-4o-mini"]
input = 0.15
cached_input = 0.075
output = 0.6
"""
WINDOW = {
    "since": (CREATED_AT - timedelta(days=30)).isoformat(),
    "until": (CREATED_AT + timedelta(hours=1)).isoformat(),
}


async def test_what_if_reprices_the_window_on_another_model(
    sqlite_database_url: str, start_proxy: ProxyFactory
) -> None:
    await upgrade_to_head(sqlite_database_url)
    engine = create_ledger_engine(sqlite_database_url)
    await LedgerStore(engine).write([row_of(record(n)) for n in range(10)])
    await engine.dispose()
    proxy_url = start_proxy(PRICES, environ={"METERING_DATABASE_URL": sqlite_database_url})
    params = {"model": "gpt-4o", "to_model": "gpt-4o-mini", "group_by": "team", **WINDOW}
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{proxy_url.removesuffix('/v1')}/usage/what-if", params=params)
    assert response.status_code == 200
    body = response.json()
    assert body["scenario"] == {"model": "gpt-4o-mini", "batch": False, "cache_prompt": False}
    (search,) = body["groups"]
    assert (search["key"], search["calls"]) == ({"team": "search"}, 10)
    assert (search["actual_cost_usd"], search["scenario_cost_usd"]) == ("0.012345678", "0.00024")


async def test_what_if_refuses_a_grouping_the_rollup_lacks(
    sqlite_database_url: str, start_proxy: ProxyFactory
) -> None:
    proxy_url = start_proxy(environ={"METERING_DATABASE_URL": sqlite_database_url})
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{proxy_url.removesuffix('/v1')}/usage/what-if", params={"group_by": "user"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "group_by"
