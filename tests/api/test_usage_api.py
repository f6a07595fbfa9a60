"""`/usage/*` on a real server over a filled ledger: answers, errors in OpenAI's shape, the key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ProxyFactory
from tests.ledger.test_reports import fill_ledger

WINDOW = {"since": "2026-11-02T00:00:00Z", "until": "2026-11-04T00:00:00Z"}
MONTH = {"since": "2026-11-02T00:00:00Z", "until": "2026-12-02T00:00:00Z"}
ROUTES = [
    "/usage/summary",
    "/usage/requests",
    "/usage/traces/trace-1",
    "/usage/top-traces",
    "/usage/what-if",
]
UNREACHABLE_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:1/ledger"


@pytest.fixture
async def usage_url(database_url: str, start_proxy: ProxyFactory) -> str:
    """A proxy whose ledger holds the report tests' calls; its base URL."""
    await fill_ledger(database_url)
    return base(start_proxy(environ={"METERING_DATABASE_URL": database_url}))


def base(proxy_url: str) -> str:
    return proxy_url.removesuffix("/v1")


async def get(
    url: str, params: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url, params=params, headers=headers)


async def test_the_summary_answers_groups_and_totals_with_decimal_strings(usage_url: str) -> None:
    response = await get(f"{usage_url}/usage/summary", {"group_by": "team", **WINDOW})

    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "records"
    assert (body["since"], body["until"]) == (WINDOW["since"], WINDOW["until"])
    assert [(g["group"], g["calls"], g["cost_usd"]) for g in body["groups"]] == [
        ({"team": "ads"}, 2, "0.03"),
        ({"team": "agents"}, 4, "0.0031"),
        ({"team": "search"}, 3, "0.010508"),
    ]
    assert body["totals"]["cost_usd"] == "0.043608"
    assert body["totals"]["prompt_share"] == 0.417073


async def test_a_month_long_summary_says_it_read_the_rollup(usage_url: str) -> None:
    response = await get(f"{usage_url}/usage/summary", {"group_by": "model,day", **MONTH})

    body = response.json()
    assert (body["source"], body["totals"]["calls"]) == ("rollup", 9)
    assert body["groups"][0]["group"] == {"model": "gpt-4o", "day": "2026-11-02T00:00:00Z"}


async def test_filters_and_repeated_tags_are_query_parameters(usage_url: str) -> None:
    params = [("tag", "feature:search"), ("tag", "env:prod"), ("user", "alice"), *WINDOW.items()]

    body = (await get(f"{usage_url}/usage/summary", params)).json()

    assert (body["totals"]["calls"], body["totals"]["cost_usd"]) == (1, "0.03")


async def test_requests_come_newest_first_a_page_at_a_time(usage_url: str) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 4, **WINDOW}

    while True:
        page = (await get(f"{usage_url}/usage/requests", params)).json()
        seen += [record["request_id"] for record in page["data"]]
        if not page["has_more"]:
            break
        params["cursor"] = page["next_cursor"]

    assert seen == ["t4", "t3", "t2", "t1", "r5", "r4", "r3", "r2", "r1"]


async def test_a_trace_answers_its_call_tree(usage_url: str) -> None:
    body = (await get(f"{usage_url}/usage/traces/trace-1")).json()

    assert (body["calls"], body["background_calls"], body["cost_usd"]) == (3, 2, "0.003")
    (root,) = body["roots"]
    assert root["request_id"] == "t1"
    assert root["children"][0]["children"][0]["request_id"] == "t3"


async def test_an_unknown_trace_is_a_404_in_openai_shape(usage_url: str) -> None:
    response = await get(f"{usage_url}/usage/traces/no-such-trace")

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "No trace `no-such-trace` in the ledger.",
            "type": "invalid_request_error",
            "param": "trace_id",
            "code": "trace_not_found",
        }
    }


async def test_top_traces_are_the_most_expensive_first(usage_url: str) -> None:
    body = (await get(f"{usage_url}/usage/top-traces", {"limit": 1, **WINDOW})).json()

    assert [(t["trace_id"], t["cost_usd"]) for t in body["data"]] == [("trace-1", "0.003")]


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/usage/summary", {"group_by": "color"}, "group_by"),
        ("/usage/summary", {"group_by": "tag:bad key"}, "group_by"),
        ("/usage/summary", {"since": "yesterday"}, "since"),
        ("/usage/summary", {"until": "2026-13-01T00:00:00Z"}, "until"),
        ("/usage/summary", {"since": WINDOW["until"], "until": WINDOW["since"]}, "since"),
        ("/usage/summary", {"until": "0001-01-01T00:00:00Z"}, "until"),
        ("/usage/summary", {"since": "0001-01-01T00:00:00+05:00"}, "since"),
        ("/usage/summary", {"team": "a\x00b"}, "team"),
        ("/usage/summary", {"model": "m" * 300}, "model"),
        ("/usage/summary", {"tag": "no-colon"}, "tag"),
        ("/usage/requests", {"limit": 0}, "limit"),
        ("/usage/requests", {"limit": 1001}, "limit"),
        ("/usage/requests", {"limit": "ten"}, "limit"),
        ("/usage/requests", {"cursor": "garbage"}, "cursor"),
        ("/usage/requests", {"user": "\x00"}, "user"),
        ("/usage/top-traces", {"limit": 101}, "limit"),
        ("/usage/top-traces", {"team": "\x00"}, "team"),
        ("/usage/traces/a%00b", {}, "trace_id"),
        ("/usage/traces/" + "t" * 300, {}, "trace_id"),
        ("/usage/traces/...", {}, "trace_id"),
    ],
)
async def test_a_bad_parameter_is_a_400_in_openai_shape(
    start_proxy: ProxyFactory, path: str, params: dict[str, Any], param: str
) -> None:
    response = await get(base(start_proxy()) + path, params)

    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        param,
        "invalid_parameter",
    )
    assert f"`{param}`" in error["message"]


async def test_with_an_admin_key_a_call_without_a_key_is_told_which_keys_read_usage(
    start_proxy: ProxyFactory,
) -> None:
    # That every route refuses every wrong key: tests/api/test_route_guards.py.
    url = base(start_proxy(environ={"METERING_ADMIN_KEY": "admin-secret"}))

    response = await get(f"{url}/usage/summary")

    assert response.status_code == 401
    assert response.json()["error"]["message"] == (
        "Reading usage needs `Authorization: Bearer` with the admin key or a team's proxy key."
    )


@pytest.mark.parametrize("route", ROUTES)
async def test_with_an_admin_key_every_route_answers_its_bearer(
    database_url: str, start_proxy: ProxyFactory, route: str
) -> None:
    await fill_ledger(database_url)
    environ = {"METERING_ADMIN_KEY": "admin-secret", "METERING_DATABASE_URL": database_url}
    url = base(start_proxy(environ=environ))

    response = await get(url + route, headers={"Authorization": "Bearer admin-secret"})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/usage/summary?group_by=color", "/usage/requests?limit=0", "/usage/traces/a%00b"],
)
async def test_the_admin_key_is_checked_before_the_parameters(
    start_proxy: ProxyFactory, path: str
) -> None:
    url = base(start_proxy(environ={"METERING_ADMIN_KEY": "admin-secret"}))

    response = await get(url + path)

    assert response.status_code == 401


async def test_without_an_admin_key_usage_is_open(start_proxy: ProxyFactory) -> None:
    response = await get(f"{base(start_proxy())}/usage/summary")

    assert response.status_code == 200
    assert response.json()["totals"]["calls"] == 0


async def test_an_unreachable_ledger_is_a_503_in_openai_shape(start_proxy: ProxyFactory) -> None:
    url = base(start_proxy(environ={"METERING_DATABASE_URL": UNREACHABLE_POSTGRES}))

    response = await get(f"{url}/usage/summary")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ledger_unavailable"


async def test_the_openapi_schema_documents_every_answer(start_proxy: ProxyFactory) -> None:
    schema = (await get(f"{base(start_proxy())}/openapi.json")).json()

    operations = {path: schema["paths"][path]["get"] for path in schema["paths"] if "usage" in path}
    assert set(operations) == {
        "/usage/summary",
        "/usage/requests",
        "/usage/traces/{trace_id}",
        "/usage/top-traces",
        "/usage/what-if",
    }
    for path, operation in operations.items():
        assert {"200", "400", "401", "503"} <= set(operation["responses"]), path
        error = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorDocument"}
    assert "404" in operations["/usage/traces/{trace_id}"]["responses"]
    money = schema["components"]["schemas"]["UsageTotals"]["properties"]["cost_usd"]
    assert money["type"] == "string"
