"""`metering-proxy`: the command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

import uvicorn

from proxy.settings import ConfigError, load_settings


def _serve(arguments: argparse.Namespace) -> int:
    if arguments.config is not None:
        # Worker processes build their own app from the environment, so the flag goes there.
        os.environ["METERING_CONFIG"] = arguments.config
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"metering-proxy: {error}", file=sys.stderr)
        return 2
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; a no-op
    # handler makes that a clean exit 0 instead of death by SIGTERM.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda number, frame: None)
    uvicorn.run(
        "proxy.app:create_app_from_environment",
        factory=True,
        host=arguments.host or settings.environment.host,
        port=arguments.port or settings.environment.port,
        workers=arguments.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        # The upstream's own Server and Date headers reach the client, not uvicorn's.
        server_header=False,
        date_header=False,
        access_log=False,
    )
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    handler = arguments.handler
    result: int = handler(arguments)
    return result


if __name__ == "__main__":
    sys.exit(main())
