"""Talking to a running proxy's admin API, as an operator's script would."""

from __future__ import annotations

from typing import Any

import httpx

ADMIN_KEY = "test-admin-key-0123456789"
ADMIN_ENVIRON = {"METERING_ADMIN_KEY": ADMIN_KEY}


class Admin:
    def __init__(self, proxy_url: str) -> None:
        root = proxy_url.removesuffix("/v1")
        self.client = httpx.Client(
            base_url=root, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        )

    def call(self, method: str, path: str, json: Any = None, expect: int = 200) -> Any:
        answer = self.client.request(method, path, json=json)
        assert answer.status_code == expect, answer.text
        return answer.json()

    def team(self, name: str) -> None:
        self.call("POST", "/admin/teams", {"name": name}, expect=201)

    def key(self, team: str, **settings: Any) -> dict[str, Any]:
        issued: dict[str, Any] = self.call(
            "POST", "/admin/keys", {"team": team, **settings}, expect=201
        )
        return issued

    def budget(self, team: str, **settings: Any) -> dict[str, Any]:
        budget: dict[str, Any] = self.call("PUT", f"/admin/teams/{team}/budget", settings)
        return budget
