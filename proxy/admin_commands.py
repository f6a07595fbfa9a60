"""The frame of the admin subcommands (`teams`, `keys`, `budgets`): the ledger they change, what
they print, how they end, and the times and amounts they read and show.

Exit codes: 0 done; 1 refused (no such team or key, already exists, an invalid value) or the
database failed, with the reason on stderr; 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.access.errors import InvalidAdminRequest
from proxy.access.store import AccessStore
from proxy.budgets.store import BudgetStore
from proxy.cli_support import command_settings, complain, database_failure
from proxy.clock import as_utc, iso_z, utc_now
from proxy.errors import ProxyError
from proxy.ledger.database import DATABASE_ERRORS, create_ledger_engine
from proxy.ledger.migrations import DatabaseSchemaError, prepare_database

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

Document = dict[str, Any]
_CENT = Decimal("0.01")
_DATABASE_NOTE = (
    "Changes the database $METERING_DATABASE_URL names directly, so no proxy needs to be "
    "running; running proxies pick the change up within a second."
)


@dataclass(frozen=True, slots=True)
class Output:
    """What a command prints: text for people, or with `--json` a document for scripts."""

    text: str
    document: Any


class Ledger:
    """The database, prepared and opened on first use: after the arguments have been checked."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._engine: AsyncEngine | None = None

    async def access(self) -> AccessStore:
        return AccessStore(await self._opened())

    async def budgets(self) -> BudgetStore:
        return BudgetStore(await self._opened())

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    async def _opened(self) -> AsyncEngine:
        if self._engine is None:
            # As at `serve`: an embedded SQLite ledger is brought to the latest schema, any
            # other database not at it is refused until `metering-proxy migrate`.
            await prepare_database(self._database_url)
            self._engine = create_ledger_engine(self._database_url)
        return self._engine


Action = Callable[[argparse.Namespace, Ledger, datetime], Awaitable[Output]]


def add_group(commands: Commands, name: str, help_text: str) -> Commands:
    """A subcommand with subcommands of its own (`teams create`, ...)."""
    parser = commands.add_parser(name, help=help_text, description=_DATABASE_NOTE)
    return parser.add_subparsers(dest=f"{name}_command", required=True)


def add_command(
    group: Commands, name: str, action: Action, help_text: str
) -> argparse.ArgumentParser:
    """A subcommand that runs `action` on the ledger; every one takes `--json`."""
    parser = group.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--json", action="store_true", help="print a JSON document instead")
    parser.set_defaults(handler=_run, action=action)
    return parser


def _run(arguments: argparse.Namespace) -> int:
    settings = command_settings()
    if settings is None:
        return 2
    database_url = settings.environment.database_url
    try:
        output = asyncio.run(_act(arguments, Ledger(database_url)))
    except ProxyError as error:
        print(f"metering-proxy {arguments.command}: {error.message}", file=sys.stderr)
        return 1
    except DatabaseSchemaError as error:
        complain(str(error))
        return 2
    except DATABASE_ERRORS as error:
        return database_failure(database_url, error)
    if arguments.json:
        sys.stdout.write(json.dumps(output.document, indent=2) + "\n")
    else:
        sys.stdout.write(output.text)
    return 0


async def _act(arguments: argparse.Namespace, ledger: Ledger) -> Output:
    action: Action = arguments.action
    try:
        return await action(arguments, ledger, utc_now())
    finally:
        await ledger.close()


def moment(text: str, option: str) -> datetime:
    """An ISO 8601 time given as `option`, in UTC (a time without an offset is UTC)."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidAdminRequest(
            f"{option} must be an ISO 8601 time, such as 2026-12-31T23:59:00Z, not {text!r}."
        ) from None
    return as_utc(at)


def iso_or_none(at: datetime | None) -> str | None:
    return None if at is None else iso_z(at)


def short(at: datetime) -> str:
    """A time as text shows it: UTC, to the second."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dollars(amount: Decimal) -> str:
    """Exact, with at least the cents: $10.00, $0.004213, $1,250.50."""
    exact = amount.normalize()
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        exact = exact.quantize(_CENT)
    return f"${exact:,f}"


def count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def lines(text_lines: list[str]) -> str:
    return "\n".join(text_lines) + "\n"
