"""`/usage/*` read with a team's proxy key: that team's usage only, whatever is asked; the admin
key still reads every team's. On a real server over the report tests' ledger (teams `search`,
`ads` and `agents`, whose calls make traces `trace-1` and `trace-2`) and a trace of `search`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from proxy.access.store import AccessStore, KeySettings
from proxy.ledger.database import create_ledger_engine
from proxy.metering.usage import UsageRecord
from tests.api.test_usage_api import WINDOW, get
from tests.conftest import ProxyFactory
from tests.ledger.test_reports import DAY2, at, call, fill_ledger, write
from tests.support.admin import ADMIN_ENVIRON, ADMIN_KEY, Admin

AS_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# Each report that takes a `team` filter, with parameters that make it cover every team.
TEAM_REPORTS = [
    ("/usage/summary", {"group_by": "team", **WINDOW}),
    ("/usage/requests", WINDOW),
    ("/usage/top-traces", WINDOW),
    ("/usage/what-if", {"group_by": "team", **WINDOW}),
]


@pytest.fixture
async def ledger_url(database_url: str) -> str:
    await fill_ledger(database_url)
    await add_calls(database_url, call("s1", at(DAY2, 15), "search", "gpt-4o", trace_id="trace-3"))
    return database_url


async def add_calls(database_url: str, *calls: UsageRecord) -> None:
    engine = create_ledger_engine(database_url)
    await write(engine, calls)
    await engine.dispose()


@pytest.fixture
def usage_url(ledger_url: str, start_proxy: ProxyFactory) -> str:
    """A proxy over the filled ledger, with the admin key set; its root URL."""
    environ = {**ADMIN_ENVIRON, "METERING_DATABASE_URL": ledger_url}
    return start_proxy(environ=environ).removesuffix("/v1")


def as_team(usage_url: str, team: str) -> dict[str, str]:
    """Headers with a new proxy key of the team (created through the admin API)."""
    admin = Admin(usage_url)
    admin.team(team)
    return {"Authorization": f"Bearer {admin.key(team)['key']}"}


async def answer(url: str, params: Any, headers: dict[str, str]) -> Any:
    response = await get(url, params, headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("route", "params"), TEAM_REPORTS)
async def test_a_teams_key_gets_what_the_admin_key_gets_filtered_to_that_team(
    usage_url: str, route: str, params: dict[str, str]
) -> None:
    url = usage_url + route
    search = as_team(usage_url, "search")

    scoped = await answer(url, params, search)

    assert scoped == await answer(url, {**params, "team": "search"}, AS_ADMIN)
    assert scoped != await answer(url, params, AS_ADMIN)


@pytest.mark.parametrize(("route", "params"), TEAM_REPORTS)
async def test_a_teams_key_naming_its_own_team_gets_the_same_answer(
    usage_url: str, route: str, params: dict[str, str]
) -> None:
    url = usage_url + route
    search = as_team(usage_url, "search")

    named = await answer(url, {**params, "team": "search"}, search)

    assert named == await answer(url, params, search)


@pytest.mark.parametrize(("route", "params"), TEAM_REPORTS)
async def test_a_teams_key_asking_for_another_team_gets_a_403_in_openai_shape(
    usage_url: str, route: str, params: dict[str, str]
) -> None:
    response = await get(usage_url + route, {**params, "team": "ads"}, as_team(usage_url, "agents"))

    assert response.status_code == 403
    assert response.json()["error"] == {
        "message": "This proxy key reads only the usage of its own team, `agents`.",
        "type": "invalid_request_error",
        "param": "team",
        "code": "team_not_allowed",
    }


async def test_the_admin_key_reads_every_teams_usage(usage_url: str) -> None:
    body = await answer(f"{usage_url}/usage/summary", {"group_by": "team", **WINDOW}, AS_ADMIN)

    assert [group["group"]["team"] for group in body["groups"]] == ["ads", "agents", "search"]


async def share_trace_1(ledger_url: str) -> None:
    """Clients choose trace ids: a call of `search` carries `agents`'s `trace-1` too."""
    await add_calls(ledger_url, call("s2", at(DAY2, 12, 5), "search", "gpt-4o", trace_id="trace-1"))


async def test_a_teams_key_sees_only_its_teams_calls_of_a_trace(
    ledger_url: str, usage_url: str
) -> None:
    await share_trace_1(ledger_url)
    url = f"{usage_url}/usage/traces/trace-1"

    search_calls = (await answer(url, None, as_team(usage_url, "search")))["calls"]
    agents_calls = (await answer(url, None, as_team(usage_url, "agents")))["calls"]

    assert (search_calls, agents_calls) == (1, 3)


async def test_the_admin_key_reads_each_teams_trace_of_a_shared_trace_id_by_its_team(
    ledger_url: str, usage_url: str
) -> None:
    await share_trace_1(ledger_url)
    url = f"{usage_url}/usage/traces/trace-1"

    trees = [await answer(url, {"team": team}, AS_ADMIN) for team in ("search", "agents")]

    assert [(tree["team"], tree["calls"]) for tree in trees] == [("search", 1), ("agents", 3)]


async def test_the_admin_key_asking_for_a_shared_trace_id_without_a_team_gets_a_400_naming_them(
    ledger_url: str, usage_url: str
) -> None:
    await share_trace_1(ledger_url)

    response = await get(f"{usage_url}/usage/traces/trace-1", None, AS_ADMIN)

    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Teams `agents`, `search` each have a trace `trace-1`: pass `team` to read one.",
        "type": "invalid_request_error",
        "param": "team",
        "code": "trace_team_required",
    }


async def test_a_teams_key_naming_another_team_for_a_trace_gets_a_403(usage_url: str) -> None:
    response = await get(
        f"{usage_url}/usage/traces/trace-1", {"team": "agents"}, as_team(usage_url, "search")
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "team_not_allowed"


async def test_the_admin_keys_top_traces_list_a_shared_trace_id_once_per_team(
    ledger_url: str, usage_url: str
) -> None:
    await share_trace_1(ledger_url)

    top = await answer(f"{usage_url}/usage/top-traces", WINDOW, AS_ADMIN)

    shared = [(t["team"], t["calls"]) for t in top["data"] if t["trace_id"] == "trace-1"]
    assert sorted(shared) == [("agents", 3), ("search", 1)]


async def test_a_trace_without_a_call_of_the_keys_team_is_a_404(usage_url: str) -> None:
    response = await get(f"{usage_url}/usage/traces/trace-2", None, as_team(usage_url, "search"))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "trace_not_found"


async def test_a_revoked_key_reads_no_usage(usage_url: str) -> None:
    admin = Admin(usage_url)
    admin.team("search")
    issued = admin.key("search")
    headers = {"Authorization": f"Bearer {issued['key']}"}
    await answer(f"{usage_url}/usage/summary", None, headers)

    admin.call("DELETE", f"/admin/keys/{issued['id']}")
    response = await get(f"{usage_url}/usage/summary", None, headers)

    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_api_key", None)
    assert "revoked" in error["message"]


async def test_without_an_admin_key_a_teams_key_still_reads_only_its_team(
    ledger_url: str, start_proxy: ProxyFactory
) -> None:
    # The admin API is closed without an admin key: the key is made as the CLI makes it.
    engine = create_ledger_engine(ledger_url)
    store = AccessStore(engine)
    await store.create_team("search", datetime.now(UTC))
    issued = await store.create_key("search", KeySettings(), datetime.now(UTC))
    await engine.dispose()
    url = start_proxy(environ={"METERING_DATABASE_URL": ledger_url}).removesuffix("/v1")

    body = await answer(
        f"{url}/usage/summary",
        {"group_by": "team", **WINDOW},
        {"Authorization": f"Bearer {issued.secret}"},
    )

    assert [group["group"]["team"] for group in body["groups"]] == ["search"]
