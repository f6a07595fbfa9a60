"""`/admin/*` on a real server: teams, keys, budgets and alert sinks, behind the admin key, with
every refusal in OpenAI's error shape."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from proxy.access.store import DEFAULT_GRACE_SECONDS
from tests.conftest import ProxyFactory
from tests.support.admin import Admin
from tests.support.clock import START
from tests.support.records import RecordCollector

NOW = START
BUDGET = {"period": "monthly", "limit_usd": "10.00", "hard": True, "thresholds": [0.5, 0.8, 1.0]}
ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture
def admin(admin_proxy: str) -> Admin:
    return Admin(admin_proxy)


def error_of(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error of an answer in OpenAI's shape, once its status and code are the ones given."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_FIELDS
    assert isinstance(error["message"], str) and error["message"]
    assert error["code"] == code
    return error


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


# The admin key (that every route refuses a call without it: tests/api/test_route_guards.py)


def test_without_an_admin_key_configured_the_admin_api_is_closed_and_says_how_to_open_it(
    start_proxy: ProxyFactory,
) -> None:
    proxy_url = start_proxy()

    answer = httpx.get(
        f"{proxy_url.removesuffix('/v1')}/admin/teams", headers={"Authorization": "Bearer anything"}
    )

    error = error_of(answer, 401, "invalid_api_key")
    assert "METERING_ADMIN_KEY" in error["message"]
    assert answer.headers["www-authenticate"] == "Bearer"


# Teams


def test_creating_a_team_answers_201_with_its_name_and_creation_time(admin: Admin) -> None:
    team = admin.call("POST", "/admin/teams", {"name": "search"}, expect=201)

    assert team["name"] == "search"
    assert when(team["created_at"]) == NOW


def test_creating_a_team_that_exists_answers_409(admin: Admin) -> None:
    admin.team("search")

    answer = admin.client.post("/admin/teams", json={"name": "search"})

    assert error_of(answer, 409, "already_exists")["param"] == "name"


def test_teams_are_listed_by_name(admin: Admin) -> None:
    for name in ["search", "ads", "agents"]:
        admin.team(name)

    teams = admin.call("GET", "/admin/teams")["data"]

    assert [team["name"] for team in teams] == ["ads", "agents", "search"]


def test_renaming_a_team_keeps_its_keys(admin: Admin) -> None:
    admin.team("search")
    issued = admin.key("search")

    renamed = admin.call("PATCH", "/admin/teams/search", {"name": "retrieval"})

    assert renamed["name"] == "retrieval"
    assert [team["name"] for team in admin.call("GET", "/admin/teams")["data"]] == ["retrieval"]
    assert admin.call("GET", f"/admin/keys/{issued['id']}")["team"] == "retrieval"


def test_renaming_a_team_to_a_name_taken_answers_409(admin: Admin) -> None:
    admin.team("search")
    admin.team("ads")

    answer = admin.client.patch("/admin/teams/search", json={"name": "ads"})

    assert error_of(answer, 409, "already_exists")["param"] == "name"


def test_deleting_a_team_deletes_its_keys(admin: Admin) -> None:
    admin.team("search")
    admin.key("search")

    deleted = admin.call("DELETE", "/admin/teams/search")

    assert deleted == {"id": "search", "deleted": True}
    assert admin.call("GET", "/admin/teams") == {"data": []}
    assert admin.call("GET", "/admin/keys") == {"data": []}


def test_an_unknown_team_answers_404(admin: Admin) -> None:
    calls: list[tuple[str, str, Any]] = [
        ("PATCH", "/admin/teams/nobody", {"name": "somebody"}),
        ("DELETE", "/admin/teams/nobody", None),
        ("PUT", "/admin/teams/nobody/budget", BUDGET),
        ("GET", "/admin/keys?team=nobody", None),
        ("POST", "/admin/keys", {"team": "nobody"}),
    ]
    for method, path, body in calls:
        answer = admin.client.request(method, path, json=body)

        error = error_of(answer, 404, "not_found")
        assert "nobody" in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "name", "invalid_parameter"),
        ({"name": ""}, "name", "invalid_parameter"),
        ({"name": 7}, "name", "invalid_parameter"),
        ({"name": "search", "colour": "blue"}, "colour", "invalid_parameter"),
        ({"name": " search "}, "name", "invalid_value"),
    ],
    ids=["missing", "empty", "not-a-string", "unknown-field", "padded"],
)
def test_an_invalid_team_body_answers_400_naming_the_field(
    admin: Admin, body: dict[str, Any], param: str, code: str
) -> None:
    answer = admin.client.post("/admin/teams", json=body)

    error = error_of(answer, 400, code)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_a_body_that_is_not_json_answers_400(admin: Admin) -> None:
    answer = admin.client.post(
        "/admin/teams", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert error_of(answer, 400, "invalid_json")["param"] is None


def test_a_body_that_is_not_an_object_answers_400_about_the_body(admin: Admin) -> None:
    answer = admin.client.post("/admin/teams", json=["search"])

    error = error_of(answer, 400, "invalid_parameter")
    assert error["param"] is None
    assert error["message"].startswith("Invalid body:")


# Keys


def test_a_new_key_is_shown_once_and_only_its_prefix_afterwards(admin: Admin) -> None:
    admin.team("search")

    issued = admin.key("search", name="ci")

    key = issued["key"]
    assert key.startswith("sk-mp-")
    assert key.startswith(issued["prefix"]) and len(issued["prefix"]) < len(key)
    assert (issued["team"], issued["name"]) == ("search", "ci")
    listed = admin.client.get("/admin/keys")
    assert [k["id"] for k in listed.json()["data"]] == [issued["id"]]
    assert key not in listed.text
    shown = admin.client.get(f"/admin/keys/{issued['id']}")
    assert shown.json()["prefix"] == issued["prefix"]
    assert "key" not in shown.json() and key not in shown.text


def test_keys_can_be_listed_for_one_team(admin: Admin) -> None:
    admin.team("search")
    admin.team("ads")
    search_key = admin.key("search")
    admin.key("ads")

    listed = admin.call("GET", "/admin/keys?team=search")["data"]

    assert [k["id"] for k in listed] == [search_key["id"]]


def test_updating_a_key_changes_only_the_fields_given(admin: Admin) -> None:
    admin.team("search")
    issued = admin.key(
        "search", name="ci", models=["gpt-4o*"], end_user="batch", expires_at="2027-01-01T00:00:00Z"
    )

    renamed = admin.call("PATCH", f"/admin/keys/{issued['id']}", {"name": "nightly"})
    opened = admin.call("PATCH", f"/admin/keys/{issued['id']}", {"models": None})

    assert (renamed["name"], renamed["models"], renamed["end_user"]) == (
        "nightly",
        ["gpt-4o*"],
        "batch",
    )
    assert (opened["name"], opened["models"], opened["end_user"]) == ("nightly", None, "batch")
    assert when(opened["expires_at"]) == datetime(2027, 1, 1, tzinfo=UTC)
    assert admin.call("GET", f"/admin/keys/{issued['id']}") == opened


def test_a_key_expiry_without_a_time_zone_answers_400(admin: Admin) -> None:
    admin.team("search")

    answer = admin.client.post(
        "/admin/keys", json={"team": "search", "expires_at": "2027-01-01T00:00:00"}
    )

    assert error_of(answer, 400, "invalid_parameter")["param"] == "expires_at"


def test_rotating_a_key_issues_a_new_one_and_ends_the_old_one_after_the_grace_period(
    admin: Admin,
) -> None:
    admin.team("search")
    old = admin.key("search", name="ci", models=["gpt-4o"])

    new = admin.call("POST", f"/admin/keys/{old['id']}/rotate", {"grace_seconds": 600}, 201)

    assert new["key"].startswith("sk-mp-") and new["key"] != old["key"]
    assert new["id"] != old["id"]
    assert (new["team"], new["name"], new["models"]) == ("search", "ci", ["gpt-4o"])
    assert new["valid_until"] is None
    old_now = admin.call("GET", f"/admin/keys/{old['id']}")
    assert when(old_now["valid_until"]) == NOW + timedelta(seconds=600)
    assert old_now["revoked_at"] is None


def test_rotating_a_key_without_a_body_gives_the_default_grace_period(admin: Admin) -> None:
    admin.team("search")
    old = admin.key("search")

    answer = admin.client.post(f"/admin/keys/{old['id']}/rotate")

    assert answer.status_code == 201, answer.text
    old_now = admin.call("GET", f"/admin/keys/{old['id']}")
    assert when(old_now["valid_until"]) == NOW + timedelta(seconds=DEFAULT_GRACE_SECONDS)


def test_a_negative_grace_period_answers_400(admin: Admin) -> None:
    admin.team("search")
    old = admin.key("search")

    answer = admin.client.post(f"/admin/keys/{old['id']}/rotate", json={"grace_seconds": -1})

    assert error_of(answer, 400, "invalid_parameter")["param"] == "grace_seconds"


def test_deleting_a_key_revokes_it(admin: Admin, admin_proxy: str) -> None:
    admin.team("search")
    issued = admin.key("search")

    revoked = admin.call("DELETE", f"/admin/keys/{issued['id']}")

    assert when(revoked["revoked_at"]) == NOW
    assert admin.call("GET", f"/admin/keys/{issued['id']}") == revoked
    client = openai.OpenAI(base_url=admin_proxy, api_key=issued["key"], max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        client.models.list()


def test_a_revoked_key_cannot_be_rotated(admin: Admin) -> None:
    admin.team("search")
    issued = admin.key("search")
    admin.call("DELETE", f"/admin/keys/{issued['id']}")

    answer = admin.client.post(f"/admin/keys/{issued['id']}/rotate")

    assert "revoked" in error_of(answer, 400, "invalid_value")["message"]


def test_an_unknown_key_answers_404(admin: Admin) -> None:
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/admin/keys/key_nobody", None),
        ("PATCH", "/admin/keys/key_nobody", {"name": "x"}),
        ("POST", "/admin/keys/key_nobody/rotate", None),
        ("DELETE", "/admin/keys/key_nobody", None),
        ("PUT", "/admin/keys/key_nobody/budget", BUDGET),
        ("GET", "/admin/keys/key_nobody/spend", None),
    ]
    for method, path, body in calls:
        answer = admin.client.request(method, path, json=body)

        assert "key_nobody" in error_of(answer, 404, "not_found")["message"], (method, path)


# Budgets


def test_a_team_budget_is_set_and_read_back_with_amounts_as_decimal_strings(
    admin: Admin,
) -> None:
    admin.team("search")

    budget = admin.call("PUT", "/admin/teams/search/budget", BUDGET)

    assert isinstance(budget["limit_usd"], str)
    assert Decimal(budget["limit_usd"]) == Decimal("10.00")
    expected = {
        "team": "search",
        "key_id": None,
        "period": "monthly",
        "hard": True,
        "thresholds": [0.5, 0.8, 1.0],
        "timezone": "UTC",
        "window_start": None,
        "window_end": None,
    }
    assert {name: budget[name] for name in expected} == expected
    assert admin.call("GET", "/admin/teams/search/budget") == budget


def test_setting_a_budget_again_replaces_it(admin: Admin) -> None:
    admin.team("search")
    admin.budget("search", **BUDGET)

    admin.budget("search", period="daily", limit_usd="2.5")

    budget = admin.call("GET", "/admin/teams/search/budget")
    assert (budget["period"], Decimal(budget["limit_usd"]), budget["hard"]) == (
        "daily",
        Decimal("2.5"),
        False,
    )


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"period": "yearly"}, "period", "invalid_parameter"),
        ({"limit_usd": "-1"}, "limit_usd", "invalid_parameter"),
        ({"limit_usd": "0"}, "limit_usd", "invalid_parameter"),
        ({"limit_usd": "ten"}, "limit_usd", "invalid_parameter"),
        ({"limit_usd": "NaN"}, "limit_usd", "invalid_parameter"),
        ({"limit_usd": "0.00000000001"}, "limit_usd", "invalid_parameter"),  # rounds to 0
        ({"limit_usd": "1000000000"}, "limit_usd", "invalid_parameter"),  # overflows the ledger
        ({"thresholds": [0]}, "thresholds", "invalid_value"),
        ({"thresholds": []}, "thresholds", "invalid_value"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "invalid_value"),
        ({"hard": "very"}, "hard", "invalid_parameter"),
        ({"owner": "me"}, "owner", "invalid_parameter"),
    ],
    ids=[
        "unknown-period",
        "negative-limit",
        "zero-limit",
        "limit-not-a-number",
        "limit-nan",
        "limit-too-fine",
        "limit-too-large",
        "zero-threshold",
        "no-thresholds",
        "unknown-time-zone",
        "hard-not-a-boolean",
        "unknown-field",
    ],
)
def test_an_invalid_budget_answers_400_naming_the_field(
    admin: Admin, change: dict[str, Any], param: str, code: str
) -> None:
    admin.team("search")

    answer = admin.client.put("/admin/teams/search/budget", json={**BUDGET, **change})

    assert error_of(answer, 400, code)["param"] == param
    error_of(admin.client.get("/admin/teams/search/budget"), 404, "not_found")


def test_the_largest_budget_the_ledger_holds_is_accepted(admin: Admin) -> None:
    admin.team("search")

    budget = admin.budget("search", period="daily", limit_usd="100000000")

    assert Decimal(budget["limit_usd"]) == Decimal(100_000_000)


@pytest.mark.parametrize(
    "window",
    [
        {"window_start": "2026-11-20T00:00:00Z"},
        {"window_end": "2026-11-30T00:00:00Z"},
        {},
    ],
    ids=["start-only", "end-only", "neither"],
)
def test_a_window_budget_without_both_ends_answers_400(
    admin: Admin, window: dict[str, str]
) -> None:
    admin.team("search")

    answer = admin.client.put(
        "/admin/teams/search/budget", json={"period": "window", "limit_usd": "5", **window}
    )

    assert "window_start and window_end" in error_of(answer, 400, "invalid_value")["message"]


def test_a_window_budget_spans_its_window(admin: Admin) -> None:
    admin.team("search")
    window = {"window_start": "2026-11-20T00:00:00Z", "window_end": "2026-11-30T00:00:00Z"}
    admin.budget("search", period="window", limit_usd="5", **window)

    spend = admin.call("GET", "/admin/teams/search/spend")

    assert when(spend["period_start"]) == when(window["window_start"])
    assert when(spend["period_end"]) == when(window["window_end"])


def test_spend_before_any_call_is_zero_over_the_current_period(admin: Admin) -> None:
    admin.team("search")
    admin.budget("search", **BUDGET)

    spend = admin.call("GET", "/admin/teams/search/spend")

    assert (spend["team"], spend["key_id"], spend["period"]) == ("search", None, "monthly")
    assert when(spend["period_start"]) == datetime(2026, 11, 1, tzinfo=UTC)
    assert when(spend["period_end"]) == datetime(2026, 12, 1, tzinfo=UTC)
    amounts = [spend[name] for name in ("spend_usd", "reserved_usd", "limit_usd")]
    assert all(isinstance(amount, str) for amount in amounts)
    assert [Decimal(amount) for amount in amounts] == [Decimal(0), Decimal(0), Decimal(10)]
    assert (spend["hard"], spend["calls"], spend["unpriced_calls"]) == (True, 0, 0)


def test_a_daily_period_starts_at_midnight_in_the_budgets_time_zone(admin: Admin) -> None:
    admin.team("search")
    admin.budget("search", period="daily", limit_usd="1", timezone="America/New_York")

    spend = admin.call("GET", "/admin/teams/search/spend")

    # 12:00 UTC on 25 November is 07:00 in New York (EST, UTC-5).
    assert when(spend["period_start"]) == datetime(2026, 11, 25, 5, tzinfo=UTC)
    assert when(spend["period_end"]) == datetime(2026, 11, 26, 5, tzinfo=UTC)


def test_spend_counts_the_calls_of_the_teams_keys(
    admin: Admin, admin_proxy: str, records: RecordCollector
) -> None:
    admin.team("search")
    admin.budget("search", **BUDGET)
    issued = admin.key("search")
    client = openai.OpenAI(base_url=admin_proxy, api_key=issued["key"], max_retries=0)

    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])

    cost = records.wait_for(1)[0].cost_usd
    assert cost is not None and cost > 0
    spend = eventually(lambda: admin.call("GET", "/admin/teams/search/spend"), calls=1)
    assert Decimal(spend["spend_usd"]) == cost


def eventually(read: Any, calls: int, timeout: float = 5.0) -> dict[str, Any]:
    """What `read` answers once it counts `calls` calls (the ledger writes in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        answer: dict[str, Any] = read()
        if answer["calls"] == calls or time.monotonic() > deadline:
            assert answer["calls"] == calls, answer
            return answer
        time.sleep(0.05)


def test_a_team_without_a_budget_has_no_budget_and_no_spend(admin: Admin) -> None:
    admin.team("search")

    for path in ["/admin/teams/search/budget", "/admin/teams/search/spend"]:
        error_of(admin.client.get(path), 404, "not_found")


def test_a_deleted_budget_is_gone(admin: Admin) -> None:
    admin.team("search")
    admin.budget("search", **BUDGET)

    assert admin.call("DELETE", "/admin/teams/search/budget") == {"id": "search", "deleted": True}

    error_of(admin.client.get("/admin/teams/search/budget"), 404, "not_found")
    error_of(admin.client.delete("/admin/teams/search/budget"), 404, "not_found")


def test_a_key_budget_is_its_own_apart_from_the_teams(admin: Admin) -> None:
    admin.team("search")
    issued = admin.key("search")

    budget = admin.call("PUT", f"/admin/keys/{issued['id']}/budget", {**BUDGET, "limit_usd": "3"})

    assert (budget["team"], budget["key_id"], Decimal(budget["limit_usd"])) == (
        "search",
        issued["id"],
        Decimal(3),
    )
    assert admin.call("GET", f"/admin/keys/{issued['id']}/budget") == budget
    spend = admin.call("GET", f"/admin/keys/{issued['id']}/spend")
    assert (spend["key_id"], Decimal(spend["spend_usd"]), Decimal(spend["limit_usd"])) == (
        issued["id"],
        Decimal(0),
        Decimal(3),
    )
    error_of(admin.client.get("/admin/teams/search/budget"), 404, "not_found")
    deleted = admin.call("DELETE", f"/admin/keys/{issued['id']}/budget")
    assert deleted == {"id": issued["id"], "deleted": True}
    error_of(admin.client.get(f"/admin/keys/{issued['id']}/budget"), 404, "not_found")


# Alert sinks and alerts


def test_a_webhook_sink_with_a_secret_never_shows_it(admin: Admin) -> None:
    secret = "whsec-0123456789abcdef"

    created = admin.client.post(
        "/admin/alert-sinks",
        json={"kind": "webhook", "url": "https://hooks.example.com/budget", "secret": secret},
    )
    listed = admin.client.get("/admin/alert-sinks")

    assert created.status_code == 201, created.text
    sink = created.json()
    assert (sink["kind"], sink["url"], sink["has_secret"]) == (
        "webhook",
        "https://hooks.example.com/budget",
        True,
    )
    assert when(sink["created_at"]) == NOW
    assert listed.json() == {"data": [sink]}
    assert secret not in created.text and secret not in listed.text


def test_a_sink_without_a_secret_says_so(admin: Admin) -> None:
    sink = admin.call(
        "POST", "/admin/alert-sinks", {"kind": "slack", "url": "https://hooks.slack.com/x"}, 201
    )

    assert sink["has_secret"] is False


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (
            {"kind": "slack", "url": "https://hooks.slack.com/x", "secret": "s3cret"},
            "secret",
            "invalid_value",
        ),
        ({"kind": "email", "url": "https://example.com"}, "kind", "invalid_parameter"),
        ({"kind": "webhook", "url": "ftp://example.com/hook"}, "url", "invalid_value"),
        ({"kind": "webhook"}, "url", "invalid_parameter"),
    ],
    ids=["slack-with-secret", "unknown-kind", "not-http", "no-url"],
)
def test_an_invalid_sink_answers_400_naming_the_field(
    admin: Admin, body: dict[str, Any], param: str, code: str
) -> None:
    answer = admin.client.post("/admin/alert-sinks", json=body)

    assert error_of(answer, 400, code)["param"] == param
    assert admin.call("GET", "/admin/alert-sinks") == {"data": []}


def test_a_second_sink_to_the_same_url_answers_409(admin: Admin) -> None:
    sink = {"kind": "webhook", "url": "https://hooks.example.com/budget"}
    admin.call("POST", "/admin/alert-sinks", sink, 201)

    answer = admin.client.post("/admin/alert-sinks", json=sink)

    assert error_of(answer, 409, "already_exists")["param"] == "url"


def test_a_deleted_sink_is_gone(admin: Admin) -> None:
    sink = admin.call(
        "POST", "/admin/alert-sinks", {"kind": "webhook", "url": "https://example.com/a"}, 201
    )

    deleted = admin.call("DELETE", f"/admin/alert-sinks/{sink['id']}")

    assert deleted == {"id": str(sink["id"]), "deleted": True}
    assert admin.call("GET", "/admin/alert-sinks") == {"data": []}
    error_of(admin.client.delete(f"/admin/alert-sinks/{sink['id']}"), 404, "not_found")


def test_no_alert_has_been_raised_at_first(admin: Admin) -> None:
    assert admin.call("GET", "/admin/alerts") == {"data": []}


def test_an_alert_limit_out_of_range_answers_400(admin: Admin) -> None:
    answer = admin.client.get("/admin/alerts", params={"limit": 0})

    assert error_of(answer, 400, "invalid_parameter")["param"] == "limit"
