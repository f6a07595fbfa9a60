"""Keys are secrets: a proxy key, the admin key, an upstream's key and a client's own key (in
passthrough mode) are never logged, echoed in an answer, exported as a metric or stored, and a
proxy key is stored only as its SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import httpx
import pytest
from sqlalchemy import MetaData, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.models import KeyRow, UsageRow
from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.admin import ADMIN_ENVIRON, ADMIN_KEY, Admin
from tests.support.databases import sqlite_url
from tests.support.fake_upstream import FakeUpstream
from tests.support.records import RecordCollector
from tests.support.waiting import comes_true

HI = [{"role": "user", "content": "Hi"}]
UPSTREAM_KEY = "sk-upstream-7f3c9a1e5b2d8f4a6c0e"
CLIENT_KEY = "sk-client-own-2b8d4f6a0c1e3a5c7e9f"
# What a key may show: proxy keys keep this many characters in the clear (`prefix`).
VISIBLE_CHARACTERS = 12
# A call of each outcome: answered, refused by the upstream (401, 500), upstream unreachable.
OUTCOMES = {"gpt-4o": 200, "unauthorized": 401, "server-error": 500, "unreachable": 502}
CALLS_PER_CREDENTIAL = len(OUTCOMES) + 2  # and a streamed call, and a model listing
DATABASE = "METERING_DATABASE_URL"


async def every_stored_value(database_url: str) -> str:
    """Every row of every table, as text."""
    engine = create_ledger_engine(database_url)
    metadata = MetaData()
    async with engine.connect() as connection:
        await connection.run_sync(metadata.reflect)
        dumped = []
        for table in metadata.sorted_tables:
            rows = (await connection.execute(select(table))).all()
            dumped.extend(repr(tuple(row)) for row in rows)
    await engine.dispose()
    return "\n".join(dumped)


async def usage_rows(database_url: str) -> int:
    engine = create_ledger_engine(database_url)
    async with engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(UsageRow))
    await engine.dispose()
    return count or 0


def config(upstream_url: str, key_env: str | None) -> str:
    """The fake upstream (with its key from `key_env`, if any), and an upstream that is down."""
    key = "" if key_env is None else f'api_key_env = "{key_env}"\n'
    return (
        'default_upstream = "fake"\n'
        '[[upstreams]]\nname = "down"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'models = ["unreachable"]\n'
        f'[[upstreams]]\nname = "fake"\nbase_url = "{upstream_url}"\n{key}'
    )


def calls(proxy_url: str, credential: str) -> list[httpx.Response]:
    """A call of each outcome, a streamed one and a model listing, with the credential."""
    with httpx.Client(
        base_url=proxy_url, headers={"Authorization": f"Bearer {credential}"}, timeout=10
    ) as client:
        chats = [{"model": model, "messages": HI} for model in OUTCOMES]
        chats.append({"model": "gpt-4o", "messages": HI, "stream": True})
        return [
            *(client.post("/chat/completions", json=chat) for chat in chats),
            client.get("/models"),
        ]


def json_api_calls(admin: Admin, proxy_key: str) -> list[httpx.Response]:
    """Admin and usage calls: with the admin key, a team's proxy key, a wrong key and none."""
    root = str(admin.client.base_url)
    return [
        admin.client.get("/admin/keys"),
        admin.client.get("/usage/summary"),
        httpx.get(f"{root}/usage/summary", headers={"Authorization": f"Bearer {proxy_key}"}),
        httpx.get(f"{root}/admin/teams", headers={"Authorization": "Bearer wrong-admin-key"}),
        httpx.get(f"{root}/admin/teams"),
    ]


def show_uvicorn_debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    # Each test server's uvicorn sets its loggers to WARNING, which hides the access log; they
    # write to the process's stderr and stdout, not to the loggers pytest captures.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        caplog.set_level(logging.DEBUG, logger=name)


def stored_values(records: RecordCollector, database_urls: list[str], calls: int) -> str:
    """Every stored value, once the ledger holds every call the proxies settled."""
    records.wait_for(calls)

    def all_stored() -> bool:
        return sum(asyncio.run(usage_rows(url)) for url in database_urls) == calls

    assert comes_true(all_stored), "the calls did not all reach the ledger"
    return "\n".join(asyncio.run(every_stored_value(url)) for url in database_urls)


def test_no_key_appears_in_logs_answers_metrics_or_anything_stored(
    fake_upstream: tuple[FakeUpstream, str],
    start_proxy: ProxyFactory,
    records: RecordCollector,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, upstream_url = fake_upstream
    databases = [sqlite_url(tmp_path / "passthrough"), sqlite_url(tmp_path / "managed")]
    passthrough = start_proxy(
        config(upstream_url, key_env=None), {**ADMIN_ENVIRON, DATABASE: databases[0]}
    )
    managed = start_proxy(
        config(upstream_url, key_env="FAKE_UPSTREAM_KEY"),
        {**ADMIN_ENVIRON, DATABASE: databases[1], "FAKE_UPSTREAM_KEY": UPSTREAM_KEY},
    )
    show_uvicorn_debug_logs(caplog)
    admin = Admin(managed)
    admin.team("search")
    old = admin.key("search", name="ci")
    new = admin.call("POST", f"/admin/keys/{old['id']}/rotate", {"grace_seconds": 0}, 201)

    answers = [
        *calls(passthrough, CLIENT_KEY),
        *calls(managed, new["key"]),
        *calls(managed, old["key"]),  # rotated out: refused by the proxy
        *calls(managed, old["key"][:-4] + "XXXX"),  # no such key
        *json_api_calls(admin, new["key"]),
    ]
    metrics = [
        httpx.get(f"{url.removesuffix('/v1')}/metrics").text for url in (passthrough, managed)
    ]
    stored = stored_values(records, databases, 4 * CALLS_PER_CREDENTIAL)
    files = [path.read_bytes().decode("latin-1") for path in tmp_path.rglob("*") if path.is_file()]
    server_output = "\n".join(capfd.readouterr())

    # The keys went where they belong, the calls had every outcome, and the capture saw the
    # servers' own output: without these, finding no key would prove little.
    sent_upstream = {request.headers.get("authorization") for request in fake.requests}
    assert {f"Bearer {CLIENT_KEY}", f"Bearer {UPSTREAM_KEY}"} <= sent_upstream
    statuses = [answer.status_code for answer in answers]
    assert statuses[:12] == 2 * [*OUTCOMES.values(), 200, 200]
    assert set(statuses[12:24]) == {401}
    assert statuses[24:] == [200, 200, 200, 401, 401]
    assert '"POST /v1/chat/completions HTTP/1.1" 401' in server_output
    places = {
        "logs": caplog.text,
        "server output": server_output,
        "answers": "\n".join(f"{answer.headers}\n{answer.text}" for answer in answers),
        "metrics": "\n".join(metrics),
        "database": stored,
        "files": "\n".join(files),
    }
    for secret in [ADMIN_KEY, UPSTREAM_KEY, CLIENT_KEY, old["key"], new["key"]]:
        for place, text in places.items():
            assert secret[VISIBLE_CHARACTERS:] not in text, f"a key appears in the {place}"


async def test_the_keys_table_holds_a_keys_sha256_and_visible_prefix_never_the_key(
    database_url: str,
    engine: AsyncEngine,
    fake_upstream: tuple[FakeUpstream, str],
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(
        single_upstream_config(fake_upstream[1]), {**ADMIN_ENVIRON, DATABASE: database_url}
    )
    admin = Admin(proxy)
    admin.team("search")

    issued = admin.key("search")

    async with engine.connect() as connection:
        (row,) = (await connection.execute(select(KeyRow.__table__))).all()
    assert row.key_hash == hashlib.sha256(issued["key"].encode()).hexdigest()
    assert row.prefix == issued["prefix"] == issued["key"][:VISIBLE_CHARACTERS]
    assert issued["key"][VISIBLE_CHARACTERS:] not in await every_stored_value(database_url)
