from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.app import create_app
from proxy.clock import Clock, utc_now
from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.settings import load_settings
from tests.support.admin import ADMIN_ENVIRON
from tests.support.clock import START, FakeClock
from tests.support.databases import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    fresh_postgres_database,
    postgres_is_reachable,
    sqlite_url,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.records import RecordCollector
from tests.support.servers import serve_in_thread


@pytest.fixture
def fake_upstream() -> Iterator[tuple[FakeUpstream, str]]:
    """A fake OpenAI upstream on a real uvicorn; yields it and its base URL (with `/v1`)."""
    fake = FakeUpstream()
    with serve_in_thread(fake) as url:
        yield fake, f"{url}/v1"
    fake.release()


ProxyFactory = Callable[..., str]


@pytest.fixture
def records() -> RecordCollector:
    """Every record the proxies of a test settle."""
    return RecordCollector()


@pytest.fixture
def start_proxy(tmp_path: Path, records: RecordCollector) -> Iterator[ProxyFactory]:
    """Start the proxy on a real uvicorn with a TOML config; returns its base URL (with `/v1`)."""
    with ExitStack() as stack:
        numbers = itertools.count()

        def start(
            config_toml: str = "",
            environ: dict[str, str] | None = None,
            clock: Clock = utc_now,
        ) -> str:
            number = next(numbers)
            config_path = tmp_path / f"config-{number}.toml"
            journal = tmp_path / f"journal-{number}"
            config_path.write_text(f'{config_toml}\n[ledger]\njournal_dir = "{journal}"\n')
            base_environ = {
                "METERING_CONFIG": str(config_path),
                "METERING_DATABASE_URL": sqlite_url(tmp_path / f"ledger-{number}"),
            }
            settings = load_settings({**base_environ, **(environ or {})})
            app = create_app(settings, extra_sinks=[records], clock=clock)
            server: AbstractContextManager[str] = serve_in_thread(app, settings.proxy.server)
            return f"{stack.enter_context(server)}/v1"

        yield start


@pytest.fixture
def clock() -> FakeClock:
    """A wall clock the test moves by hand, starting at `START`."""
    return FakeClock(START)


@pytest.fixture
def admin_proxy(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, clock: FakeClock
) -> str:
    """The proxy in front of the fake upstream, its admin API open, on the test's clock."""
    _, upstream_url = fake_upstream
    return start_proxy(single_upstream_config(upstream_url), ADMIN_ENVIRON, clock=clock)


@pytest.fixture
def proxy_to_fake(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> tuple[FakeUpstream, str]:
    """The proxy in front of the fake upstream, passthrough mode; yields the fake and proxy URL."""
    fake, upstream_url = fake_upstream
    return fake, start_proxy(single_upstream_config(upstream_url))


def single_upstream_config(upstream_url: str) -> str:
    return f'[[upstreams]]\nname = "fake"\nbase_url = "{upstream_url}"\n'


@pytest.fixture(scope="session")
def postgres_server() -> None:
    """Skip a test that needs the local Postgres when it is down; under CI=true, fail it."""
    if postgres_is_reachable():
        return
    message = f"no Postgres server on {POSTGRES_HOST}:{POSTGRES_PORT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}, and CI runs every test")
    pytest.skip(message)


@pytest.fixture
def sqlite_database_url(tmp_path: Path) -> str:
    """The URL of a SQLite ledger file that does not exist yet."""
    return sqlite_url(tmp_path)


@pytest.fixture
async def postgres_database_url(postgres_server: None) -> AsyncIterator[str]:
    """The URL of a new, empty Postgres database, dropped after the test."""
    async with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty ledger database on each engine the proxy supports."""
    url: str = request.getfixturevalue(f"{request.param}_database_url")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated, empty ledger (on each engine the proxy supports)."""
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    yield engine
    await engine.dispose()
