"""Whatever goes wrong in the JSON APIs (`/admin/*`, `/usage/*`), the answer has OpenAI's shape."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ProxyFactory
from tests.support.admin import ADMIN_ENVIRON, Admin
from tests.support.databases import sqlite_url


def openai_error(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert list(document) == ["error"]
    error: dict[str, Any] = document["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_an_unforeseen_failure_is_a_500_in_openai_shape(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    environ = {**ADMIN_ENVIRON, "METERING_DATABASE_URL": sqlite_url(tmp_path)}
    admin = Admin(start_proxy(environ=environ))
    # A row someone's own SQL wrote, which the API cannot read back: no route expects that.
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as ledger, ledger:
        ledger.execute(
            "INSERT INTO teams (name, created_at, updated_at) VALUES ('x', 'garbage', 'garbage')"
        )
    error = openai_error(admin.client.get("/admin/teams"), 500)
    assert error == {
        "message": "The proxy failed unexpectedly; its log says why.",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_an_unknown_path_is_a_404_in_openai_shape(admin_proxy: str) -> None:
    error = openai_error(Admin(admin_proxy).client.get("/admin/nothing-here"), 404)
    assert (error["type"], error["message"]) == ("invalid_request_error", "Not Found")


def test_a_method_a_path_does_not_take_is_a_405_keeping_its_allow_header(admin_proxy: str) -> None:
    answer = Admin(admin_proxy).client.put("/admin/teams")
    assert openai_error(answer, 405)["type"] == "invalid_request_error"
    assert "POST" in answer.headers["allow"]


def test_a_body_that_is_not_utf8_is_a_400_in_openai_shape(admin_proxy: str) -> None:
    answer = Admin(admin_proxy).client.post(
        "/admin/teams", content=b'{"name": "caf\xe9"}', headers={"content-type": "application/json"}
    )
    assert openai_error(answer, 400)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("POST", "/admin/teams", b'{"name": "a\\u0000b"}', "name"),
        ("POST", "/admin/teams", b'{"name": "a\\ud800b"}', "name"),
        ("POST", "/admin/keys", b'{"team": "t", "models": ["gpt-\\u0000"]}', "models.0"),
        ("GET", "/admin/teams/a%00b/budget", b"", "name"),
        ("GET", "/admin/keys?team=a%00b", b"", "team"),
    ],
    ids=["NUL", "lone surrogate", "NUL in a list", "NUL in the path", "NUL in the query"],
)
def test_text_the_database_cannot_hold_is_a_400_naming_it(
    start_proxy: ProxyFactory,
    database_url: str,
    engine: AsyncEngine,
    method: str,
    path: str,
    body: bytes,
    param: str,
) -> None:
    admin = Admin(start_proxy(environ={**ADMIN_ENVIRON, "METERING_DATABASE_URL": database_url}))
    answer = admin.client.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    error = openai_error(answer, 400)
    assert (error["param"], error["code"]) == (param, "invalid_parameter")
