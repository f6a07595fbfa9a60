"""A proxy key is a secret: it is never logged, echoed in an error, exported as a metric or
stored in the clear."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import MetaData, select

from proxy.ledger.database import create_ledger_engine
from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.admin import ADMIN_ENVIRON, Admin
from tests.support.databases import sqlite_url
from tests.support.fake_upstream import FakeUpstream

HI = [{"role": "user", "content": "Hi"}]


async def _every_stored_value(database_url: str) -> str:
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


def test_keys_appear_in_no_log_error_metric_or_stored_row(
    fake_upstream: tuple[FakeUpstream, str],
    start_proxy: ProxyFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _, upstream_url = fake_upstream
    database_url = sqlite_url(tmp_path / "secrets")
    proxy = start_proxy(
        single_upstream_config(upstream_url),
        {**ADMIN_ENVIRON, "METERING_DATABASE_URL": database_url},
    )
    admin = Admin(proxy)
    admin.team("search")
    issued = admin.key("search", name="ci")
    rotated = admin.call("POST", f"/admin/keys/{issued['id']}/rotate", {"grace_seconds": 0}, 201)
    secrets = [issued["key"], rotated["key"]]
    answers, statuses = [], []
    for key in [*secrets, "sk-mp-" + issued["key"][6:-4] + "XXXX"]:
        answer = httpx.post(
            f"{proxy}/chat/completions",
            json={"model": "gpt-4o", "messages": HI},
            headers={"Authorization": f"Bearer {key}"},
        )
        answers.append(answer.text + str(answer.headers))
        statuses.append(answer.status_code)
    client = openai.OpenAI(base_url=proxy, api_key=rotated["key"], max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
    listing = admin.call("GET", "/admin/keys")
    metrics = httpx.get(proxy.removesuffix("/v1") + "/metrics").text

    stored = asyncio.run(_every_stored_value(database_url))

    assert statuses == [401, 200, 401]  # the rotated-out key, the new one, a made-up one
    for key in secrets:
        for place, text in [
            ("logs", caplog.text),
            ("answers", "\n".join(answers)),
            ("metrics", metrics),
            ("database", stored),
            ("key listing", str(listing)),
        ]:
            assert key not in text, f"a proxy key appears in the {place}"
            assert key[12:] not in text, f"part of a proxy key appears in the {place}"
