"""`metering-proxy budgets set | show | delete`: the budget of a team, or of one of its keys.

`show` gives what `GET /admin/teams/{name}/spend` does, with the budget's settings.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from proxy.access.errors import InvalidAdminRequest
from proxy.admin_commands import (
    Document,
    Ledger,
    Output,
    add_command,
    add_group,
    count,
    dollars,
    lines,
    moment,
    short,
)
from proxy.budgets.model import DEFAULT_THRESHOLDS, Budget, BudgetSettings
from proxy.budgets.periods import PERIOD_KINDS, PeriodKind
from proxy.clock import iso_z
from proxy.ledger.reports.documents import usd_text

if TYPE_CHECKING:
    from proxy.admin_commands import Commands

_WINDOW_OPTIONS = (
    "--period window needs --window-start and --window-end; other periods take neither."
)


def register(commands: Commands) -> None:
    """Add the `budgets` subcommand."""
    budgets = add_group(commands, "budgets", "set, show and delete the budget of a team or key")
    budget_set = add_command(budgets, "set", _set_budget, "create or replace a budget")
    _owner_options(budget_set)
    budget_set.add_argument("--period", required=True, help=", ".join(PERIOD_KINDS))
    budget_set.add_argument("--limit-usd", required=True, help="the limit in USD, e.g. 10.00")
    budget_set.add_argument(
        "--hard", action="store_true", help="refuse calls beyond the limit (default: alert only)"
    )
    budget_set.add_argument(
        "--thresholds",
        default=",".join(str(share) for share in DEFAULT_THRESHOLDS),
        help="comma-separated shares of the limit at which to alert (default: 0.5,0.8,1)",
    )
    budget_set.add_argument(
        "--timezone", default="UTC", help="where days start, e.g. Europe/Paris (default: UTC)"
    )
    budget_set.add_argument("--window-start", help="ISO 8601 time (--period window only)")
    budget_set.add_argument("--window-end", help="ISO 8601 time (--period window only)")
    show = add_command(budgets, "show", _show_budget, "a budget and its current period's spend")
    _owner_options(show)
    _owner_options(add_command(budgets, "delete", _delete_budget, "delete a budget"))


def _owner_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", required=True)
    parser.add_argument("--key", metavar="KEY_ID", help="the budget of this key of the team")


async def _set_budget(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    period = _period(arguments.period)
    window = None
    if arguments.window_start is not None or arguments.window_end is not None:
        if arguments.window_start is None or arguments.window_end is None:
            raise InvalidAdminRequest(_WINDOW_OPTIONS)
        window = (
            moment(arguments.window_start, "--window-start"),
            moment(arguments.window_end, "--window-end"),
        )
    if (period == "window") != (window is not None):
        raise InvalidAdminRequest(_WINDOW_OPTIONS)
    settings = BudgetSettings(
        period=period,
        limit_usd=_limit(arguments.limit_usd),
        hard=arguments.hard,
        thresholds=_thresholds(arguments.thresholds),
        timezone=arguments.timezone,
        window=window,
    )
    budgets = await ledger.budgets()
    budget = await budgets.set_budget(arguments.team, arguments.key, settings, now)
    text = f"Set the budget of {budget.label}: {_summary(budget.settings)}.\n"
    return Output(text, budget_document(budget))


async def _show_budget(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    budgets = await ledger.budgets()
    budget = await budgets.get_budget(arguments.team, arguments.key)
    period = budget.period_at(now)
    spend = await budgets.spend(budget, period)
    reserved = await budgets.leased(budget.id, period.start, now)
    limit = budget.settings.limit_usd
    document = {
        **budget_document(budget),
        "period_start": iso_z(period.start),
        "period_end": iso_z(period.end),
        "spend_usd": usd_text(spend.cost_usd),
        "reserved_usd": usd_text(reserved),
        "calls": spend.calls,
        "unpriced_calls": spend.unpriced_calls,
    }
    used = f"{spend.cost_usd / limit:.1%} of the limit, {count(spend.calls, 'call')}"
    facts = [
        ("period", f"{short(period.start)} to {short(period.end)}"),
        ("spend", f"{dollars(spend.cost_usd)} ({used})"),
        ("unpriced", f"{count(spend.unpriced_calls, 'call')} of unknown price: not in spend"),
        ("reserved", f"{dollars(reserved)} held by running proxies for calls under way"),
        ("limit", dollars(limit)),
    ]
    width = max(len(label) for label, _ in facts)
    text = [f"Budget of {budget.label}: {_summary(budget.settings)}", ""]
    text += [f"{label.ljust(width)}  {value}" for label, value in facts]
    return Output(lines(text), document)


async def _delete_budget(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    await (await ledger.budgets()).delete_budget(arguments.team, arguments.key)
    owner = f"team {arguments.team!r}"
    if arguments.key is not None:
        owner = f"key {arguments.key} of {owner}"
    document = {"id": arguments.key or arguments.team, "deleted": True}
    return Output(f"Deleted the budget of {owner}.\n", document)


def budget_document(budget: Budget) -> Document:
    """A budget's settings, as the Admin API shows them."""
    settings = budget.settings
    return {
        "team": budget.team,
        "key_id": budget.key_id,
        "period": settings.period,
        "limit_usd": usd_text(settings.limit_usd),
        "hard": settings.hard,
        # Shares of the limit, as the Admin API takes them: numbers, not amounts.
        "thresholds": [float(share) for share in settings.thresholds],
        "timezone": settings.timezone,
        "window_start": iso_z(settings.window[0]) if settings.window else None,
        "window_end": iso_z(settings.window[1]) if settings.window else None,
    }


def _summary(settings: BudgetSettings) -> str:
    kind = "hard (refuses calls beyond it)" if settings.hard else "soft (alerts only)"
    shares = ", ".join(
        f"{format((share * 100).normalize(), 'f')}%" for share in settings.thresholds
    )
    where = "" if settings.period == "window" else f" in {settings.timezone}"
    return f"{dollars(settings.limit_usd)} {settings.period}{where}, {kind}, alerts at {shares}"


def _period(text: str) -> PeriodKind:
    for kind in PERIOD_KINDS:
        if kind == text:
            return kind
    raise InvalidAdminRequest(f"--period must be one of {', '.join(PERIOD_KINDS)}, not {text!r}.")


def _limit(text: str) -> Decimal:
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount <= 0:
        raise InvalidAdminRequest(
            f"--limit-usd must be a positive amount in USD, such as 10.00, not {text!r}."
        )
    return amount


def _thresholds(text: str) -> tuple[Decimal, ...]:
    try:
        shares = tuple(Decimal(part.strip()) for part in text.split(","))
    except InvalidOperation:
        shares = ()
    if not shares or not all(share.is_finite() and share > 0 for share in shares):
        raise InvalidAdminRequest(
            "--thresholds takes comma-separated shares of the limit above 0, such as "
            f"0.5,0.8,1.0 (1.0 is the limit itself), not {text!r}."
        )
    return shares
