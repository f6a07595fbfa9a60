"""`metering-proxy`: the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from proxy import admin_cli, reports_cli
from proxy.cli_support import database_failure
from proxy.ledger.database import DATABASE_ERRORS
from proxy.ledger.migrations import (
    DatabaseSchemaError,
    Upgrade,
    describe_database,
    prepare_database,
    upgrade_to_head,
)
from proxy.server.descriptors import connection_cap, raise_descriptor_limit
from proxy.server.protocol import ClientConnections
from proxy.settings import (
    MULTIPROCESS_ENVIRONMENT_VARIABLE,
    ConfigError,
    ServerConfig,
    load_settings,
)


def _serve(arguments: argparse.Namespace) -> int:
    if arguments.config is not None:
        # Worker processes build their own app from the environment, so the flag goes there.
        os.environ["METERING_CONFIG"] = arguments.config
    try:
        settings = load_settings()
        max_connections = _connection_cap(settings.proxy.server)
    except ConfigError as error:
        print(f"metering-proxy: {error}", file=sys.stderr)
        return 2
    port = arguments.port or settings.environment.port
    if arguments.workers > 1:
        _share_metrics_between_workers(settings.environment.metrics_multiprocess_dir, port)
    # Each worker's lifespan prepares the database too; doing it here first shows a refusal as
    # one line, at once, instead of in every worker's startup log.
    database_url = settings.environment.database_url
    try:
        asyncio.run(prepare_database(database_url))
    except DatabaseSchemaError as error:
        print(f"metering-proxy: {error}", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as error:
        # Calls are still served and journaled while the database is away: start anyway.
        print(
            f"metering-proxy: warning: the database {describe_database(database_url)} is "
            f"unreachable ({error}); records are kept in the journal until it is back",
            file=sys.stderr,
        )
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; a no-op
    # handler makes that a clean exit 0 instead of death by SIGTERM.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda number, frame: None)
    uvicorn.run(
        "proxy.app:create_app_from_environment",
        factory=True,
        host=arguments.host or settings.environment.host,
        port=port,
        workers=arguments.workers,
        loop="uvloop",
        # uvicorn calls `http` to make each connection's protocol: a class, or this factory
        # (httptools with deadlines on the client, and the connection cap).
        http=ClientConnections(settings.proxy.server, max_connections),  # type: ignore[arg-type]
        lifespan="on",
        # The upstream's own Server and Date headers reach the client, not uvicorn's.
        server_header=False,
        date_header=False,
        access_log=False,
        # Nothing reads the client's address, so X-Forwarded-For need not be parsed per call.
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.proxy.shutdown_grace_seconds),
    )
    return 0


def _connection_cap(server: ServerConfig) -> int:
    """Each process's cap on its connections, once the soft fd limit is raised to the hard one:
    `max_connections`, or what that limit holds, said on stderr if lower."""
    descriptors = raise_descriptor_limit()
    cap = connection_cap(server.max_connections, descriptors)
    if cap < server.max_connections:
        print(
            f"metering-proxy: warning: server.max_connections lowered from "
            f"{server.max_connections} to {cap} per process, what its file descriptor limit "
            f"({descriptors}) holds",
            file=sys.stderr,
        )
    return cap


def _share_metrics_between_workers(configured: Path | None, port: int) -> None:
    """Workers write their metrics to one directory, emptied first: prometheus-client reads
    `PROMETHEUS_MULTIPROC_DIR` when a worker imports it, so it is set before they start."""
    directory = configured or Path(tempfile.gettempdir()) / f"metering-metrics-{os.getuid()}-{port}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROCESS_ENVIRONMENT_VARIABLE] = str(directory)


def _migrate(arguments: argparse.Namespace) -> int:
    try:
        database_url = load_settings().environment.database_url
    except ConfigError as error:
        print(f"metering-proxy: {error}", file=sys.stderr)
        return 2
    try:
        upgrade = asyncio.run(upgrade_to_head(database_url))
    except DatabaseSchemaError as error:
        print(f"metering-proxy: {error}", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as error:
        return database_failure(database_url, error)
    print(_describe_upgrade(database_url, upgrade))
    return 0


def _describe_upgrade(database_url: str, upgrade: Upgrade) -> str:
    where = describe_database(database_url)
    after = ", ".join(upgrade.after)
    if upgrade.before == upgrade.after:
        return f"{where} is already at the latest schema revision ({after}); nothing to do"
    before = ", ".join(upgrade.before) or "an empty database"
    return f"migrated {where} from {before} to schema revision {after} (the latest)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metering-proxy", description="A transparent, OpenAI-compatible metering proxy."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the proxy")
    serve.add_argument("--config", help="TOML config file (default: $METERING_CONFIG)")
    serve.add_argument("--host", help="address to listen on (default: $METERING_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $METERING_PORT or 8080)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    serve.set_defaults(handler=_serve)
    migrate = commands.add_parser(
        "migrate", help="upgrade the ledger database ($METERING_DATABASE_URL) to the latest schema"
    )
    migrate.set_defaults(handler=_migrate)
    reports_cli.register(commands)
    admin_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    handler = arguments.handler
    result: int = handler(arguments)
    return result


if __name__ == "__main__":
    sys.exit(main())
