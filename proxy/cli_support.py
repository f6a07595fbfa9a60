"""What the `metering-proxy` subcommands share: their settings, and how they report a database
they cannot use."""

from __future__ import annotations

import sys

from proxy.ledger.migrations import describe_database
from proxy.settings import ConfigError, Settings, load_settings


def complain(message: str) -> None:
    """One line on stderr, naming the program."""
    print(f"metering-proxy: {message}", file=sys.stderr)


def command_settings() -> Settings | None:
    """The settings, or None once the reason they cannot be loaded is printed (exit 2)."""
    try:
        return load_settings()
    except ConfigError as error:
        complain(str(error))
        return None


def database_failure(database_url: str, error: Exception, action: str = "use") -> int:
    """Say that the ledger database failed, without its password; the exit code, 1."""
    complain(f"cannot {action} the ledger database {describe_database(database_url)}: {error}")
    return 1
