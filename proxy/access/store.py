"""Teams and proxy keys in the database: what the admin API and the CLI change.

Every change bumps the access version in its own transaction, so that every proxy process
reloads its copy (see `proxy/access/version.py`). A key is returned in the clear only by the
call that creates it; the database keeps its SHA-256 and a short visible prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy.access import version
from proxy.access.errors import AlreadyExists, InvalidAdminRequest, NotFound
from proxy.access.secrets import hash_of, new_key, visible_prefix
from proxy.clock import as_utc
from proxy.ids import new_request_id
from proxy.ledger.models import BudgetRow, KeyRow, TeamRow

DEFAULT_GRACE_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Team:
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    team: str
    name: str | None
    prefix: str
    models: tuple[str, ...] | None  # model name globs the key may call; None: any
    end_user: str | None  # calls with this key are attributed to this end user
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    valid_until: datetime | None  # set when rotated: the end of the grace period

    def usable_until(self) -> datetime | None:
        """When the key stops working (expiry or end of a rotation's grace), if ever."""
        ends = [at for at in (self.expires_at, self.valid_until) if at is not None]
        return min(ends) if ends else None


@dataclass(frozen=True, slots=True)
class KeySettings:
    name: str | None = None
    expires_at: datetime | None = None
    models: tuple[str, ...] | None = None
    end_user: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key as created: the only time its secret is known."""

    key: Key
    secret: str


def _team(row: TeamRow) -> Team:
    return Team(name=row.name, created_at=as_utc(row.created_at))


def key_of_row(row: Any, team: str) -> Key:
    """A key from a row of the keys table (Core rows: `select(KeyRow)` on a connection gives
    the table's columns, not a `KeyRow`)."""
    return Key(
        id=row.id,
        team=team,
        name=row.name,
        prefix=row.prefix,
        models=tuple(row.models) if row.models is not None else None,
        end_user=row.end_user,
        created_at=as_utc(row.created_at),
        expires_at=_aware_or_none(row.expires_at),
        revoked_at=_aware_or_none(row.revoked_at),
        valid_until=_aware_or_none(row.valid_until),
    )


def _aware_or_none(at: datetime | None) -> datetime | None:
    return None if at is None else as_utc(at)


class AccessStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_team(self, name: str, now: datetime) -> Team:
        _check_name(name)
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    insert(TeamRow),
                    {"name": name, "created_at": now, "updated_at": now},
                )
                await version.bump(connection)
        except IntegrityError:
            raise AlreadyExists(f"A team named {name!r} already exists.", param="name") from None
        return Team(name=name, created_at=now)

    async def list_teams(self) -> list[Team]:
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(TeamRow).order_by(TeamRow.name))).all()
        return [_team(row) for row in rows]  # type: ignore[arg-type]

    async def rename_team(self, name: str, new_name: str, now: datetime) -> Team:
        """Rename a team; calls recorded before keep the name they were made under."""
        _check_name(new_name)
        try:
            async with self._engine.begin() as connection:
                team_id = await team_id_of(connection, name)
                await connection.execute(
                    update(TeamRow)
                    .where(TeamRow.id == team_id)
                    .values(name=new_name, updated_at=now)
                )
                created = await connection.scalar(
                    select(TeamRow.created_at).where(TeamRow.id == team_id)
                )
                await version.bump(connection)
        except IntegrityError:
            raise AlreadyExists(
                f"A team named {new_name!r} already exists.", param="name"
            ) from None
        assert created is not None
        return Team(name=new_name, created_at=as_utc(created))

    async def delete_team(self, name: str) -> None:
        """Delete a team with its keys and budgets; its recorded usage stays in the ledger."""
        async with self._engine.begin() as connection:
            team_id = await team_id_of(connection, name)
            await connection.execute(delete(BudgetRow).where(BudgetRow.team_id == team_id))
            await connection.execute(delete(KeyRow).where(KeyRow.team_id == team_id))
            await connection.execute(delete(TeamRow).where(TeamRow.id == team_id))
            await version.bump(connection)

    async def create_key(self, team: str, settings: KeySettings, now: datetime) -> IssuedKey:
        async with self._engine.begin() as connection:
            team_id = await team_id_of(connection, team)
            issued = await _insert_key(connection, team_id, team, settings, now)
            await version.bump(connection)
        return issued

    async def list_keys(self, team: str | None = None) -> list[Key]:
        statement = select(KeyRow, TeamRow.name.label("team")).join(
            TeamRow, KeyRow.team_id == TeamRow.id
        )
        if team is not None:
            statement = statement.where(TeamRow.name == team)
        async with self._engine.connect() as connection:
            if team is not None:
                await team_id_of(connection, team)
            rows = (await connection.execute(statement.order_by(KeyRow.created_at))).all()
        return [key_of_row(row, row.team) for row in rows]

    async def get_key(self, key_id: str) -> Key:
        async with self._engine.connect() as connection:
            row, team = await _key_row(connection, key_id)
        return key_of_row(row, team)

    async def update_key(self, key_id: str, settings: KeySettings) -> Key:
        """Replace a key's name, expiry, model allow-list and end-user label."""
        async with self._engine.begin() as connection:
            await _key_row(connection, key_id)
            await connection.execute(
                update(KeyRow)
                .where(KeyRow.id == key_id)
                .values(
                    name=settings.name,
                    expires_at=settings.expires_at,
                    models=_models(settings.models),
                    end_user=settings.end_user,
                )
            )
            row, team = await _key_row(connection, key_id)
            await version.bump(connection)
        return key_of_row(row, team)

    async def rotate_key(self, key_id: str, grace_seconds: int, now: datetime) -> IssuedKey:
        """A new key with the old one's settings; the old one works `grace_seconds` more."""
        if grace_seconds < 0:
            raise InvalidAdminRequest("grace_seconds cannot be negative.", param="grace_seconds")
        async with self._engine.begin() as connection:
            row, team = await _key_row(connection, key_id)
            if row.revoked_at is not None:
                raise InvalidAdminRequest(f"Key {key_id} is revoked: it cannot be rotated.")
            settings = KeySettings(
                name=row.name,
                expires_at=_aware_or_none(row.expires_at),
                models=tuple(row.models) if row.models is not None else None,
                end_user=row.end_user,
            )
            issued = await _insert_key(connection, row.team_id, team, settings, now)
            grace_end = now + timedelta(seconds=grace_seconds)
            if row.valid_until is None or as_utc(row.valid_until) > grace_end:
                await connection.execute(
                    update(KeyRow).where(KeyRow.id == key_id).values(valid_until=grace_end)
                )
            await version.bump(connection)
        return issued

    async def revoke_key(self, key_id: str, now: datetime) -> Key:
        async with self._engine.begin() as connection:
            row, team = await _key_row(connection, key_id)
            if row.revoked_at is None:
                await connection.execute(
                    update(KeyRow).where(KeyRow.id == key_id).values(revoked_at=now)
                )
                await version.bump(connection)
            row, team = await _key_row(connection, key_id)
        return key_of_row(row, team)


async def team_id_of(connection: AsyncConnection, team: str, lock: bool = False) -> int:
    """The team's id; `lock` holds its row until the transaction ends."""
    statement = select(TeamRow.id).where(TeamRow.name == team)
    found = await connection.scalar(statement.with_for_update() if lock else statement)
    if found is None:
        raise NotFound(f"No team named {team!r}.", param="team")
    return int(found)


async def _key_row(connection: AsyncConnection, key_id: str) -> tuple[Any, str]:
    found = (
        await connection.execute(
            select(KeyRow, TeamRow.name.label("team"))
            .join(TeamRow, KeyRow.team_id == TeamRow.id)
            .where(KeyRow.id == key_id)
        )
    ).first()
    if found is None:
        raise NotFound(f"No key with id {key_id!r}.", param="id")
    return found, found.team


async def _insert_key(
    connection: AsyncConnection, team_id: int, team: str, settings: KeySettings, now: datetime
) -> IssuedKey:
    secret = new_key()
    return IssuedKey(
        await insert_key_hash(
            connection, team_id, team, hash_of(secret), visible_prefix(secret), settings, now
        ),
        secret,
    )


async def insert_key_hash(
    connection: AsyncConnection,
    team_id: int,
    team: str,
    key_hash: str,
    prefix: str,
    settings: KeySettings,
    now: datetime,
    key_id: str | None = None,
) -> Key:
    """Store a key by its hash (also how keys declared in the config file get in)."""
    key_id = key_id or "key_" + new_request_id()
    await connection.execute(
        insert(KeyRow),
        {
            "id": key_id,
            "team_id": team_id,
            "name": settings.name,
            "prefix": prefix,
            "key_hash": key_hash,
            "models": _models(settings.models),
            "end_user": settings.end_user,
            "created_at": now,
            "expires_at": settings.expires_at,
            "revoked_at": None,
            "valid_until": None,
        },
    )
    return Key(
        id=key_id,
        team=team,
        name=settings.name,
        prefix=prefix,
        models=settings.models,
        end_user=settings.end_user,
        created_at=now,
        expires_at=settings.expires_at,
        revoked_at=None,
        valid_until=None,
    )


def _models(models: Sequence[str] | None) -> list[str] | None:
    return None if models is None else list(models)


def _check_name(name: str) -> None:
    if not name or len(name) > 128 or not name.isprintable() or name != name.strip():
        raise InvalidAdminRequest(
            "A team name is 1 to 128 printable characters, without leading or trailing spaces.",
            param="name",
        )
