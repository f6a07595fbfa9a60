"""The access version: one counter, bumped by every change to teams, keys, budgets or alert sinks.

Each proxy process polls it (one tiny query a second) and reloads its in-memory copy when it
moves, so a key revoked through any replica or the CLI stops working everywhere within a second,
while requests themselves never query the database.
"""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.ledger.models import AccessVersionRow

_ROW_ID = 1


async def bump(connection: AsyncConnection) -> None:
    """Mark a change, inside the transaction that makes it."""
    changed = await connection.execute(
        update(AccessVersionRow)
        .where(AccessVersionRow.id == _ROW_ID)
        .values(version=AccessVersionRow.version + 1)
    )
    if changed.rowcount == 0:
        await connection.execute(insert(AccessVersionRow), {"id": _ROW_ID, "version": 1})


async def current(connection: AsyncConnection) -> int:
    found = await connection.scalar(
        select(AccessVersionRow.version).where(AccessVersionRow.id == _ROW_ID)
    )
    return int(found or 0)
