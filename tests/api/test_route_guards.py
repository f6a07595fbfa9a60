"""Every route of the real app, walked from `create_app(...).routes` (into included routers and
mounted apps): `/admin/*` and `/usage/*` refuse any call without a right key, in OpenAI's error
shape, and every other route is one of the few meant to be open."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, Mount

from proxy.app import create_app
from proxy.settings import load_settings
from tests.support.admin import ADMIN_ENVIRON, ADMIN_KEY, Admin
from tests.support.databases import sqlite_url

Operation = tuple[str, str]
GUARDED_PREFIXES = ("/admin/", "/usage/")
OPEN_OPERATIONS = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")} | {
    # FastAPI's schema and the pages that show it (plain Starlette routes: GET and HEAD).
    (method, path)
    for method in ("GET", "HEAD")
    for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
}
WRONG_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer not-the-admin-key"},
    {"Authorization": f"Bearer {ADMIN_KEY}x"},
    {"Authorization": f"Basic {ADMIN_KEY}"},
    {"Authorization": ADMIN_KEY},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer sk-mp-" + "x" * 43},  # shaped like a proxy key, but no key
]
# A refusal, less its wording: status, the scheme it asks for, and OpenAI's error fields.
REFUSAL = (
    401,
    "Bearer",
    {"type": "invalid_request_error", "param": None, "code": "invalid_api_key"},
)


def operations(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[Operation]:
    """Every method and path the routes serve, path parameters filled with a dummy."""
    for context in iter_route_contexts(routes):
        path = prefix + re.sub(r"\{[^}]+\}", "nobody", context.path or "")
        if isinstance(context.original_route, Mount):
            yield from operations(context.original_route.routes, path)
            continue
        # A route that is neither HTTP nor a mount (a websocket) would need a walk of its own.
        assert context.methods, f"{path} is neither an HTTP route nor a mount"
        for method in context.methods:
            yield method, path


@pytest.fixture
def served(tmp_path: Path) -> set[Operation]:
    """What the app that `serve` builds answers, besides `/v1/*`."""
    settings = load_settings({**ADMIN_ENVIRON, "METERING_DATABASE_URL": sqlite_url(tmp_path)})
    return set(operations(create_app(settings).routes))


def guarded(served: set[Operation]) -> list[Operation]:
    return sorted(op for op in served if op[1].startswith(GUARDED_PREFIXES))


def refusal_of(answer: httpx.Response) -> tuple[int, str | None, dict[str, Any] | None]:
    body = answer.json()
    error = dict(body["error"]) if set(body) == {"error"} else {}
    message = error.pop("message", None)
    return (
        answer.status_code,
        answer.headers.get("www-authenticate"),
        error if isinstance(message, str) and message else None,
    )


def refusals(proxy_url: str, calls: list[Operation], headers: dict[str, str]) -> list[Any]:
    """The calls not refused as REFUSAL, with what they got instead."""
    wrong = []
    with httpx.Client(base_url=proxy_url.removesuffix("/v1")) as client:
        for method, path in calls:
            answer = client.request(method, path, headers=headers, json={})
            if refusal_of(answer) != REFUSAL:
                wrong.append((method, path, headers, answer.status_code, answer.text))
    return wrong


def test_every_admin_and_usage_route_refuses_a_call_without_a_right_key(
    admin_proxy: str, served: set[Operation]
) -> None:
    calls = guarded(served)
    assert {("POST", "/admin/teams"), ("GET", "/usage/summary")} <= set(calls)

    wrong = [refusals(admin_proxy, calls, headers) for headers in WRONG_CREDENTIALS]

    assert wrong == [[] for _ in WRONG_CREDENTIALS]


def test_a_teams_proxy_key_opens_no_admin_route(admin_proxy: str, served: set[Operation]) -> None:
    admin = Admin(admin_proxy)
    admin.team("search")
    team_key = admin.key("search")["key"]
    calls = [op for op in guarded(served) if op[1].startswith("/admin/")]

    assert refusals(admin_proxy, calls, {"Authorization": f"Bearer {team_key}"}) == []


def test_every_other_route_is_one_meant_to_be_open(served: set[Operation]) -> None:
    assert {op for op in served if not op[1].startswith(GUARDED_PREFIXES)} == OPEN_OPERATIONS
