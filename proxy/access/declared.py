"""Teams, keys, budgets and alert sinks declared in the config file, written to the database
at start.

Small deployments keep them in the config; each start makes the database match it (a team is
created if missing, a key is added or updated by its hash, a budget set), so every replica and
the admin API see one truth. What was added through the admin API is left alone.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.access import version
from proxy.access.errors import AlreadyExists
from proxy.access.secrets import hash_of, visible_prefix
from proxy.access.store import AccessStore, KeySettings, insert_key_hash, team_id_of
from proxy.alerts.store import AlertStore
from proxy.budgets.store import BudgetStore
from proxy.ledger.models import KeyRow
from proxy.settings import KeyConfig, Settings


def _key_settings(config: KeyConfig) -> KeySettings:
    return KeySettings(
        name=config.name,
        expires_at=config.expires_at,
        models=config.models,
        end_user=config.end_user,
    )


async def apply_declared(engine: AsyncEngine, settings: Settings, now: datetime) -> None:
    """Make the database hold every team, key and budget the config declares."""
    access, budgets = AccessStore(engine), BudgetStore(engine)
    for team in settings.proxy.teams:
        with contextlib.suppress(AlreadyExists):
            await access.create_team(team.name, now)
        secrets = settings.secrets.team_keys.get(team.name, ())
        for config, key in zip(team.keys, secrets, strict=True):
            await _declare_key(engine, team.name, key.get_secret_value(), config, now)
        if team.budget is not None:
            await budgets.set_budget(team.name, None, team.budget.budget_settings(), now)
    alerts = AlertStore(engine)
    for sink, secret in zip(
        settings.proxy.alert_sinks, settings.secrets.alert_sink_secrets, strict=True
    ):
        with contextlib.suppress(AlreadyExists):
            await alerts.add_sink(
                sink.kind, sink.url, None if secret is None else secret.get_secret_value(), now
            )


async def _declare_key(
    engine: AsyncEngine, team: str, secret: str, config: KeyConfig, now: datetime
) -> None:
    key_hash = hash_of(secret)
    settings = _key_settings(config)
    async with engine.begin() as connection:
        team_id = await team_id_of(connection, team)
        known = await connection.scalar(select(KeyRow.id).where(KeyRow.key_hash == key_hash))
        if known is None:
            try:
                async with connection.begin_nested():
                    await insert_key_hash(
                        connection,
                        team_id,
                        team,
                        key_hash,
                        visible_prefix(secret),
                        settings,
                        now,
                        key_id="key_cfg_" + key_hash[:24],
                    )
            except IntegrityError:
                return  # another replica declared it at the same moment
        else:
            await connection.execute(
                update(KeyRow)
                .where(KeyRow.id == known)
                .values(
                    team_id=team_id,
                    name=settings.name,
                    models=None if settings.models is None else list(settings.models),
                    end_user=settings.end_user,
                    expires_at=settings.expires_at,
                )
            )
        await version.bump(connection)
