"""Reports cannot stall calls, nor pile up (issue 14, item 10): any team's key could run
`/usage/what-if` in a loop, each pricing rollup rows for seconds on the event loop that serves
`/v1`. Through a real `serve` process over a SQLite ledger whose hourly rollup makes one what-if
take a noticeable time, and real sockets. Durations are compared with one what-if's, never with a
fixed time: each call must take a small part of a report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import insert

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.models import HourlyUsageRow
from tests.conftest import single_upstream_config
from tests.support.admin import ADMIN_ENVIRON, ADMIN_KEY, Admin
from tests.support.databases import sqlite_url
from tests.support.fake_upstream import FakeUpstream
from tests.support.process import ProxyProcess
from tests.support.servers import serve_in_thread

END = datetime(2026, 11, 1, tzinfo=UTC)
# Rollup rows (one an hour) by team: `flooder`'s what-if prices most of the admin's, the
# others' take little time.
HOURS = {"flooder": 16_000, "t2": 1_000, "t3": 1_000, "t4": 1_000, "t5": 1_000}
START = END - timedelta(hours=max(HOURS.values()))
WINDOW = {"since": START.isoformat(), "until": END.isoformat()}
WHAT_IF = {"to_model": "gpt-4o-mini", **WINDOW}
# Bounded at both ends, so that the real date (the `serve` process's clock) does not matter.
ONE_HOUR_WHAT_IF = {
    "to_model": "gpt-4o-mini",
    "since": (END - timedelta(hours=1)).isoformat(),
    "until": END.isoformat(),
}
AS_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
# Far below one report's duration: what a call may take while reports run.
SMALL_PART = 1 / 4


@dataclass(frozen=True)
class ReportsProxy:
    url: str
    keys: dict[str, dict[str, str]]  # Authorization headers, by team
    report_seconds: float  # one what-if of every team's calls, alone


@dataclass(frozen=True)
class Answer:
    status: int
    seconds: float
    response: httpx.Response


async def _seed(database_url: str) -> None:
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    rows = [
        {
            "hour": END - timedelta(hours=hour + 1),
            "team": team,
            "model": "gpt-4o",
            "upstream": "fake",
            "calls": 3,
            "input_tokens": 300,
            "cached_input_tokens": 40,
            "output_tokens": 60,
            "cost_usd": Decimal("0.0012"),
        }
        for team, hours in HOURS.items()
        for hour in range(hours)
    ]
    async with engine.begin() as connection:
        for start in range(0, len(rows), 5_000):
            await connection.execute(insert(HourlyUsageRow), rows[start : start + 5_000])
    await engine.dispose()


@pytest.fixture(scope="module")
def reports_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportsProxy]:
    """A `serve` process with the admin key set, a key for each team, and its reports process
    started; the duration of one what-if of every team's calls, run alone."""
    directory: Path = tmp_path_factory.mktemp("report-flood")
    database_url = sqlite_url(directory)
    asyncio.run(_seed(database_url))
    fake = FakeUpstream()
    with serve_in_thread(fake) as upstream_url:
        config = directory / "proxy.toml"
        config.write_text(
            f"{single_upstream_config(f'{upstream_url}/v1')}"
            f'[ledger]\njournal_dir = "{directory / "journal"}"\n'
        )
        environ = {"METERING_DATABASE_URL": database_url, **ADMIN_ENVIRON}
        proxy = ProxyProcess("--config", str(config), cwd=directory, environ=environ)
        try:
            proxy.wait_ready()
            admin = Admin(proxy.url)
            keys = {}
            for team in HOURS:
                admin.team(team)
                keys[team] = {"Authorization": f"Bearer {admin.key(team)['key']}"}
            report = httpx.Client(base_url=proxy.url, headers=AS_ADMIN, timeout=120)
            assert report.get("/usage/what-if", params=WHAT_IF).status_code == 200
            started = time.perf_counter()
            assert report.get("/usage/what-if", params=WHAT_IF).status_code == 200
            yield ReportsProxy(proxy.url, keys, time.perf_counter() - started)
        finally:
            fake.release()
            assert proxy.terminate() == 0, proxy.log.read_text()


def _client(proxy: ReportsProxy) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=proxy.url, timeout=120, limits=httpx.Limits(max_connections=50)
    )


async def _get(
    client: httpx.AsyncClient, path: str, params: dict[str, str], headers: dict[str, str]
) -> Answer:
    started = time.perf_counter()
    response = await client.get(path, params=params, headers=headers)
    return Answer(response.status_code, time.perf_counter() - started, response)


async def _what_ifs_until(client: httpx.AsyncClient, stop: asyncio.Event) -> None:
    while not stop.is_set():
        answer = await _get(client, "/usage/what-if", WHAT_IF, AS_ADMIN)
        assert answer.status == 200, answer.response.text


async def _places_back(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """Until both of this caller's places are free: two quick reports at once both answered."""
    while True:
        answers = await asyncio.gather(
            *(_get(client, "/usage/top-traces", {}, headers) for _ in range(2))
        )
        if all(answer.status == 200 for answer in answers):
            return
        await asyncio.sleep(0.02)


def _refused_at_once(answer: Answer, status: int, code: str, report_seconds: float) -> None:
    assert answer.status == status, answer.response.text
    assert answer.response.json()["error"]["code"] == code
    assert set(answer.response.json()["error"]) == {"message", "type", "param", "code"}
    assert int(answer.response.headers["retry-after"]) > 0
    assert answer.seconds < report_seconds * SMALL_PART, (answer.seconds, report_seconds)


async def test_plain_calls_stay_prompt_while_what_ifs_run_in_a_loop(
    reports_proxy: ReportsProxy,
) -> None:
    report_seconds = reports_proxy.report_seconds
    stop = asyncio.Event()
    async with _client(reports_proxy) as client:
        loops = [asyncio.create_task(_what_ifs_until(client, stop)) for _ in range(2)]
        await asyncio.sleep(report_seconds / 4)  # both what-ifs are being priced
        calls = []
        for _ in range(8):
            answer = await client.post("/v1/chat/completions", json=CHAT)
            assert answer.status_code == 200, answer.text
            calls.append(answer.elapsed.total_seconds())
            await asyncio.sleep(report_seconds / 10)
        assert not any(loop.done() for loop in loops), "a what-if loop ended early"
        for loop in loops:
            loop.cancel()  # the clients hang up: their what-ifs are stopped
        await asyncio.gather(*loops, return_exceptions=True)
        await _places_back(client, AS_ADMIN)
    assert max(calls) < report_seconds * SMALL_PART, (calls, report_seconds)


async def test_a_flood_of_reports_past_the_bound_is_refused_at_once_with_503(
    reports_proxy: ReportsProxy,
) -> None:
    """Two reports run at once and eight wait (the defaults): of ten more, two are refused."""
    report_seconds = reports_proxy.report_seconds
    async with _client(reports_proxy) as client:
        long = [
            asyncio.create_task(_get(client, "/usage/what-if", WHAT_IF, AS_ADMIN)) for _ in range(2)
        ]
        await asyncio.sleep(report_seconds / 10)  # both running places are taken
        flood = [
            asyncio.create_task(_get(client, "/usage/what-if", ONE_HOUR_WHAT_IF, headers))
            for headers in reports_proxy.keys.values()
            for _ in range(2)
        ]
        done, queued = await asyncio.wait(flood, timeout=report_seconds / 2)
        assert (len(done), len(queued)) == (2, 8), [task.result().status for task in done]
        for task in done:
            _refused_at_once(task.result(), 503, "reports_busy", report_seconds)
        for task in long:
            task.cancel()
        await asyncio.gather(*long, return_exceptions=True)
        assert {task.status for task in await asyncio.gather(*queued)} == {200}
        await _places_back(client, AS_ADMIN)


async def test_a_team_flooding_reports_gets_429s_and_other_teams_still_get_theirs(
    reports_proxy: ReportsProxy,
) -> None:
    report_seconds = reports_proxy.report_seconds
    flooder, other = reports_proxy.keys["flooder"], reports_proxy.keys["t2"]
    async with _client(reports_proxy) as client:
        flood = [
            asyncio.create_task(_get(client, "/usage/what-if", WHAT_IF, flooder)) for _ in range(8)
        ]
        done, running = await asyncio.wait(flood, timeout=report_seconds / 2)
        assert (len(done), len(running)) == (6, 2), [task.result().status for task in done]
        for task in done:
            _refused_at_once(task.result(), 429, "too_many_reports", report_seconds)

        answer = await _get(client, "/usage/what-if", WHAT_IF, other)
        assert answer.status == 200, answer.response.text
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await _places_back(client, flooder)


async def _hang_up_on_a_what_if(url: str, after_seconds: float) -> None:
    """A what-if asked for on a raw socket, closed before the answer."""
    address = urlsplit(url)
    _, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(
        f"GET /usage/what-if?{urlencode(WHAT_IF)} HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\n\r\n".encode()
    )
    await writer.drain()
    await asyncio.sleep(after_seconds)
    writer.close()
    await writer.wait_closed()


async def test_a_client_that_hangs_up_frees_its_reports_places_at_once(
    reports_proxy: ReportsProxy,
) -> None:
    """The admin key counts as one team: its two places held by what-ifs it hung up on are
    free again far sooner than those what-ifs would have ended."""
    report_seconds = reports_proxy.report_seconds
    await asyncio.gather(
        *(_hang_up_on_a_what_if(reports_proxy.url, report_seconds / 4) for _ in range(2))
    )
    hung_up = time.perf_counter()
    async with _client(reports_proxy) as client:
        await _places_back(client, AS_ADMIN)
    freed = time.perf_counter() - hung_up
    assert freed < report_seconds * SMALL_PART, (freed, report_seconds)
