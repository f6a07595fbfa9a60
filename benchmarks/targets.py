"""What the benchmark measures: the fake upstream directly, this proxy, and other proxies.

This proxy runs as `metering-proxy serve` with full metering: usage extracted from every answer,
priced, counted in the Prometheus metrics, and written to a Postgres ledger (a database made for
the run and dropped after it).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.processes import Server, free_port

POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
DATABASE_PREFIX = "metering_bench_"
UPSTREAM_KEY = "sk-bench-upstream"
_PROXY_CONFIG = """
[ledger]
journal_dir = "{journal}"

[[upstreams]]
name = "bench"
kind = "openai"
base_url = "{upstream}"
api_key_env = "BENCH_UPSTREAM_KEY"
"""


@dataclass
class Target:
    """Somewhere to send calls: `base_url` ends in `/v1`; `server` is None for the upstream."""

    name: str
    base_url: str
    server: Server | None = None
    headers: dict[str, str] = field(default_factory=lambda: {"Authorization": "Bearer sk-bench"})


def metering_proxy_command(config: Path, port: int, workers: int) -> list[str]:
    return [
        str(Path(sys.executable).with_name("metering-proxy")),
        "serve", "--config", str(config), "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


class Ledger:
    """The run's own Postgres database, read to check that every metered call landed."""

    def __init__(self) -> None:
        self.name = f"{DATABASE_PREFIX}{secrets.token_hex(6)}"
        self.url = "postgresql+asyncpg://{user}@{host}:{port}/".format(**POSTGRES) + self.name

    def create(self) -> None:
        _administer(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        _administer(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def rows(self) -> int:
        async def count() -> int:
            connection = await asyncpg.connect(**POSTGRES, database=self.name)
            try:
                found: int = await connection.fetchval("SELECT count(*) FROM usage_records")
                return found
            finally:
                await connection.close()

        return asyncio.run(count())


def _administer(statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(**POSTGRES, database="postgres")
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def scrape(base_url: str, metric: str) -> float:
    """The sum of every sample of `metric` on the proxy's `/metrics`."""
    root = base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == metric
    )


@contextmanager
def metering_proxy(
    name: str,
    upstream_url: str,
    cpus: str,
    workers: int,
    work_dir: Path,
    ledger: Ledger,
    settings: str = "",
) -> Iterator[Target]:
    """This proxy, migrated onto `ledger`'s database, serving until the block ends; `settings`
    are top-level keys of its config."""
    port = free_port()
    journal = work_dir / f"journal-{port}"
    config = work_dir / f"proxy-{port}.toml"
    config.write_text(settings + _PROXY_CONFIG.format(journal=journal, upstream=upstream_url))
    environment = {
        "METERING_DATABASE_URL": ledger.url,
        "BENCH_UPSTREAM_KEY": UPSTREAM_KEY,
    }
    command = metering_proxy_command(config, port, workers)
    subprocess.run(
        [command[0], "migrate"],
        env={**os.environ, **environment},
        check=True,
        capture_output=True,
    )
    server = Server(
        name,
        command,
        cpus,
        f"http://127.0.0.1:{port}/readyz",
        work_dir / f"{name}.log",
        environment,
    )
    server.start()
    try:
        yield Target(name, f"http://127.0.0.1:{port}/v1", server)
    finally:
        server.stop()


@contextmanager
def command_proxy(
    name: str, command: str, ready_path: str, upstream_url: str, cpus: str, work_dir: Path
) -> Iterator[Target]:
    """Another proxy, started from a shell command with `{port}` and `{upstream}` filled in."""
    port = free_port()
    filled = command.format(port=port, upstream=upstream_url)
    server = Server(
        name,
        ["bash", "-c", f"exec {filled}"],
        cpus,
        f"http://127.0.0.1:{port}{ready_path}",
        work_dir / f"{name}.log",
    )
    server.start()
    try:
        yield Target(name, f"http://127.0.0.1:{port}/v1", server)
    finally:
        server.stop()


@contextmanager
def fake_upstream(cpus: str, work_dir: Path) -> Iterator[Target]:
    port = free_port()
    command: Sequence[str] = [sys.executable, "-m", "benchmarks.fake_upstream", "--port", str(port)]
    server = Server(
        "upstream", command, cpus, f"http://127.0.0.1:{port}/v1/models", work_dir / "upstream.log"
    )
    server.start()
    try:
        yield Target("direct", f"http://127.0.0.1:{port}/v1", server)
    finally:
        server.stop()
