"""CORS is off: no answer grants another origin access (no `Access-Control-Allow-Origin`), so a
web page elsewhere cannot make a visitor's browser read the proxy's answers.

`/v1/*` relays the upstream's headers as they are; the fake upstream sends no CORS header, so any
one there would be the proxy's own.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.admin import ADMIN_KEY

ORIGIN = "https://elsewhere.example"
# Each path, with what a successful GET of it needs.
PATHS = {
    "/v1/models": {},
    "/admin/teams": {"Authorization": f"Bearer {ADMIN_KEY}"},
    "/metrics": {},
}


def cors_headers(answer: httpx.Response) -> list[str]:
    return [name for name in answer.headers if name.lower().startswith("access-control-")]


@pytest.mark.parametrize("path", PATHS)
def test_a_preflight_from_another_origin_is_granted_nothing(admin_proxy: str, path: str) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }

    answer = httpx.options(admin_proxy.removesuffix("/v1") + path, headers=preflight)

    assert cors_headers(answer) == []


@pytest.mark.parametrize("path", PATHS)
def test_a_call_from_another_origin_is_answered_without_granting_it_access(
    admin_proxy: str, path: str
) -> None:
    headers = {"Origin": ORIGIN, **PATHS[path]}

    answer = httpx.get(admin_proxy.removesuffix("/v1") + path, headers=headers)

    assert answer.status_code == 200
    assert cors_headers(answer) == []
