"""`metering-proxy teams | keys | budgets`: the Admin API's operations, straight on the database.

They change the database `METERING_DATABASE_URL` names, so no proxy needs to be running: every
change bumps the access version that running proxies poll, and they see it within a second.
With `--json` they print the Admin API's documents (a key's also tells its `status`).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from proxy import budgets_cli
from proxy.access.errors import InvalidAdminRequest
from proxy.access.store import DEFAULT_GRACE_SECONDS, Key, KeySettings, Team
from proxy.admin_commands import (
    Document,
    Ledger,
    Output,
    add_command,
    add_group,
    count,
    iso_or_none,
    lines,
    moment,
    short,
)
from proxy.clock import iso_z
from proxy.terminal import aligned_table

if TYPE_CHECKING:
    from proxy.admin_commands import Commands


def register(commands: Commands) -> None:
    """Add the `teams`, `keys` and `budgets` subcommands."""
    teams = add_group(commands, "teams", "create, list, rename and delete teams")
    add_command(teams, "create", _create_team, "create a team").add_argument("name")
    add_command(teams, "list", _list_teams, "list the teams")
    rename = add_command(teams, "rename", _rename_team, "rename a team (past calls keep the name)")
    rename.add_argument("name")
    rename.add_argument("new_name")
    delete = add_command(teams, "delete", _delete_team, "delete a team with its keys and budgets")
    delete.add_argument("name")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    keys = add_group(commands, "keys", "create, list, rotate, revoke and update proxy keys")
    create = add_command(keys, "create", _create_key, "create a key (shown this once)")
    create.add_argument("--team", required=True)
    _key_options(create)
    listing = add_command(keys, "list", _list_keys, "list the keys (prefixes, never the keys)")
    listing.add_argument("--team", help="only this team's keys")
    rotate = add_command(keys, "rotate", _rotate_key, "replace a key by a new one (shown once)")
    rotate.add_argument("id")
    rotate.add_argument(
        "--grace-seconds",
        type=int,
        default=DEFAULT_GRACE_SECONDS,
        help=f"how long the old key keeps working (default: {DEFAULT_GRACE_SECONDS})",
    )
    add_command(keys, "revoke", _revoke_key, "stop a key from working").add_argument("id")
    update = add_command(keys, "update", _update_key, "change a key's settings (others kept)")
    update.add_argument("id")
    _key_options(update, clearable=True)

    budgets_cli.register(commands)


def _key_options(parser: argparse.ArgumentParser, clearable: bool = False) -> None:
    clear = " ('' to clear)" if clearable else ""
    parser.add_argument("--name", help=f"a label for people{clear}")
    parser.add_argument(
        "--expires-at", help=f"ISO 8601 time the key stops working (UTC if no offset){clear}"
    )
    models = parser.add_mutually_exclusive_group() if clearable else parser
    models.add_argument(
        "--models", nargs="+", metavar="GLOB", help="model name patterns the key may call"
    )
    if clearable:
        models.add_argument("--any-model", action="store_true", help="let the key call any model")
    parser.add_argument("--end-user", help=f"attribute the key's calls to this end user{clear}")


# Teams


async def _create_team(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    team = await (await ledger.access()).create_team(arguments.name, now)
    return Output(f"Created team {team.name!r}.\n", _team_document(team))


async def _list_teams(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    teams = await (await ledger.access()).list_teams()
    rows = [[team.name, short(team.created_at)] for team in teams]
    total = [count(len(teams), "team"), ""]
    text = lines(aligned_table(["name", "created"], rows, total, text_columns=2))
    return Output(text, {"data": [_team_document(team) for team in teams]})


async def _rename_team(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    team = await (await ledger.access()).rename_team(arguments.name, arguments.new_name, now)
    text = (
        f"Renamed team {arguments.name!r} to {team.name!r}; calls recorded before keep the "
        f"name {arguments.name!r} in the ledger.\n"
    )
    return Output(text, _team_document(team))


async def _delete_team(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    access = await ledger.access()
    name = arguments.name
    keys = await access.list_keys(name)  # refuses an unknown team before asking anything
    what = f"team {name!r} with its {count(len(keys), 'key')} and its budgets"
    if not arguments.yes:
        _confirm(f"Delete {what}? Its recorded usage stays in the ledger.")
    await access.delete_team(name)
    text = f"Deleted {what}; its recorded usage stays in the ledger.\n"
    return Output(text, {"id": name, "deleted": True})


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise InvalidAdminRequest(f"{question} Add --yes to confirm.")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise InvalidAdminRequest("Nothing was deleted.")


def _team_document(team: Team) -> Document:
    return {"name": team.name, "created_at": iso_z(team.created_at)}


# Keys


async def _create_key(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    settings = KeySettings(
        name=arguments.name or None,
        expires_at=_expiry(arguments.expires_at, now),
        models=tuple(arguments.models) if arguments.models else None,
        end_user=arguments.end_user or None,
    )
    issued = await (await ledger.access()).create_key(arguments.team, settings, now)
    key = issued.key
    heading = f"Created key {key.id} for team {key.team!r} (prefix {key.prefix}):"
    return Output(_shown_once(heading, issued.secret), _issued_document(key, issued.secret, now))


async def _list_keys(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    keys = await (await ledger.access()).list_keys(arguments.team)
    header = ["id", "team", "name", "prefix", "models", "end user", "expires", "status"]
    rows = [
        [
            key.id,
            key.team,
            key.name or "-",
            key.prefix,
            ",".join(key.models) if key.models is not None else "any",
            key.end_user or "-",
            short(key.expires_at) if key.expires_at else "never",
            _status_text(key, now),
        ]
        for key in keys
    ]
    total = [count(len(keys), "key"), *([""] * (len(header) - 1))]
    text = lines(aligned_table(header, rows, total, text_columns=len(header)))
    return Output(text, {"data": [_key_document(key, now) for key in keys]})


async def _rotate_key(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    access = await ledger.access()
    issued = await access.rotate_key(arguments.id, arguments.grace_seconds, now)
    old = await access.get_key(arguments.id)
    key = issued.key
    heading = (
        f"Rotated key {old.id} of team {key.team!r}. The new key {key.id} (prefix {key.prefix}):"
    )
    until = old.usable_until()
    if until is not None and until > now:
        after = f"The old key ({old.prefix}) keeps working until {short(until)}.\n"
    else:
        after = f"The old key ({old.prefix}) no longer works.\n"
    document = {**_issued_document(key, issued.secret, now), "rotated": _key_document(old, now)}
    return Output(_shown_once(heading, issued.secret) + after, document)


async def _revoke_key(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    key = await (await ledger.access()).revoke_key(arguments.id, now)
    assert key.revoked_at is not None
    if key.revoked_at == now:
        text = f"Revoked key {key.id} of team {key.team!r} ({key.prefix}): it no longer works.\n"
    else:
        text = f"Key {key.id} of team {key.team!r} was revoked at {short(key.revoked_at)}.\n"
    return Output(text, _key_document(key, now))


async def _update_key(arguments: argparse.Namespace, ledger: Ledger, now: datetime) -> Output:
    changes = (arguments.name, arguments.expires_at, arguments.models, arguments.end_user)
    if all(change is None for change in changes) and not arguments.any_model:
        raise InvalidAdminRequest(
            "Nothing to change: give --name, --expires-at, --models, --any-model or --end-user."
        )
    access = await ledger.access()
    current = await access.get_key(arguments.id)
    models = current.models
    if arguments.any_model:
        models = None
    elif arguments.models is not None:
        models = tuple(arguments.models)
    settings = KeySettings(
        name=current.name if arguments.name is None else arguments.name or None,
        expires_at=(
            current.expires_at
            if arguments.expires_at is None
            else _expiry(arguments.expires_at, now)
        ),
        models=models,
        end_user=current.end_user if arguments.end_user is None else arguments.end_user or None,
    )
    key = await access.update_key(arguments.id, settings)
    return Output(f"Updated key {key.id} of team {key.team!r}.\n", _key_document(key, now))


def _shown_once(heading: str, secret: str) -> str:
    return f"{heading}\n\n    {secret}\n\nThis key will not be shown again: store it now.\n"


def _key_status(key: Key, now: datetime) -> str:
    """active, revoked, expired or rotated (the old key of a rotation, in or past its grace)."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active" if key.valid_until is None else "rotated"


def _status_text(key: Key, now: datetime) -> str:
    status = _key_status(key, now)
    if status == "rotated" and key.valid_until is not None and key.valid_until > now:
        return f"rotated (grace until {short(key.valid_until)})"
    return status


def _key_document(key: Key, now: datetime) -> Document:
    return {
        "id": key.id,
        "team": key.team,
        "name": key.name,
        "prefix": key.prefix,
        "models": list(key.models) if key.models is not None else None,
        "end_user": key.end_user,
        "created_at": iso_z(key.created_at),
        "expires_at": iso_or_none(key.expires_at),
        "revoked_at": iso_or_none(key.revoked_at),
        "valid_until": iso_or_none(key.valid_until),  # the end of a rotation's grace
        "status": _key_status(key, now),
    }


def _issued_document(key: Key, secret: str, now: datetime) -> Document:
    # The Admin API's answer ({"id", "key", "prefix", "team"}) first, then the key's settings.
    return {"id": key.id, "key": secret, **_key_document(key, now)}


def _expiry(text: str | None, now: datetime) -> datetime | None:
    if not text:
        return None
    expires_at = moment(text, "--expires-at")
    if expires_at <= now:
        raise InvalidAdminRequest(f"--expires-at {text} is in the past.")
    return expires_at
