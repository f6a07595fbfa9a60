"""Alerts, their sinks and the delivery outbox in the database.

An alert is recorded once per budget x period x kind x threshold (a unique constraint, so the
dedupe holds across restarts and replicas), and in the same transaction one delivery row is
queued per sink. Dispatchers claim due deliveries for a while before sending them, so two
processes never send the same delivery at the same time (see `claim_due`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.access import version
from proxy.access.errors import AlreadyExists, InvalidAdminRequest, NotFound
from proxy.alerts.model import Alert
from proxy.clock import as_utc, iso_z
from proxy.ledger.models import AlertDeliveryRow, AlertRow, AlertSinkRow

SinkKind = Literal["webhook", "slack"]
SINK_KINDS: tuple[str, ...] = get_args(SinkKind)
MAX_URL_LENGTH = 2048
MAX_SECRET_LENGTH = 256
MAX_ERROR_LENGTH = 512
MAX_LIST_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AlertSink:
    """A sink as the admin API shows it: whether it has a secret, never the secret."""

    id: int
    kind: SinkKind
    url: str
    has_secret: bool
    created_at: datetime

    def document(self) -> dict[str, Any]:
        """The sink as JSON for the admin API."""
        return {
            "id": self.id,
            "kind": self.kind,
            "url": self.url,
            "has_secret": self.has_secret,
            "created_at": iso_z(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class SinkTarget:
    """Where and how to send: for the dispatcher only, as it holds the secret."""

    id: int
    kind: SinkKind
    url: str = field(repr=False)
    secret: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert to send to one sink; `attempt` counts this one (1 for the first)."""

    alert_id: str
    sink: SinkTarget
    attempt: int
    payload: dict[str, Any] = field(repr=False)


class AlertStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = (postgresql if self._postgres else sqlite).insert

    async def add_sink(
        self, kind: SinkKind, url: str, secret: str | None, now: datetime
    ) -> AlertSink:
        """Add a webhook or Slack sink; every alert recorded from now on is sent to it."""
        _check_sink(kind, url, secret)
        try:
            async with self._engine.begin() as connection:
                sink_id = await connection.scalar(
                    insert(AlertSinkRow).returning(AlertSinkRow.id),
                    {"kind": kind, "url": url, "secret": secret, "created_at": as_utc(now)},
                )
                await version.bump(connection)
        except IntegrityError:
            raise AlreadyExists(
                f"A {kind} sink with this URL already exists.", param="url"
            ) from None
        assert sink_id is not None
        return AlertSink(
            id=sink_id, kind=kind, url=url, has_secret=secret is not None, created_at=as_utc(now)
        )

    async def list_sinks(self) -> list[AlertSink]:
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        AlertSinkRow.id,
                        AlertSinkRow.kind,
                        AlertSinkRow.url,
                        AlertSinkRow.secret.is_not(None),
                        AlertSinkRow.created_at,
                    ).order_by(AlertSinkRow.id)
                )
            ).all()
        return [
            AlertSink(
                id=row[0],
                kind=_kind(row[1]),
                url=row[2],
                has_secret=bool(row[3]),
                created_at=as_utc(row[4]),
            )
            for row in rows
        ]

    async def delete_sink(self, sink_id: int) -> None:
        """Remove a sink and the deliveries still queued for it."""
        async with self._engine.begin() as connection:
            # Explicit, rather than trusting ON DELETE CASCADE, which SQLite may not enforce.
            await connection.execute(
                delete(AlertDeliveryRow).where(AlertDeliveryRow.sink_id == sink_id)
            )
            deleted = await connection.execute(
                delete(AlertSinkRow).where(AlertSinkRow.id == sink_id)
            )
            if deleted.rowcount == 0:
                raise NotFound(f"No alert sink has id {sink_id}.", param="id")
            await version.bump(connection)

    async def sink_targets(self) -> dict[int, SinkTarget]:
        """Every sink with its secret, by id: for sending, never for showing."""
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        AlertSinkRow.id, AlertSinkRow.kind, AlertSinkRow.url, AlertSinkRow.secret
                    )
                )
            ).all()
        return {row.id: _target(row.id, row.kind, row.url, row.secret) for row in rows}

    async def record(self, alert: Alert) -> bool:
        """Store the alert and queue it for every sink; False if it was already recorded."""
        table = AlertRow.__table__
        statement = (
            self._insert(table)
            .values(
                id=alert.id,
                budget_id=alert.budget_id,
                team=alert.team,
                key_id=alert.key_id,
                kind=alert.kind,
                threshold=alert.threshold,
                period=alert.period,
                period_start=as_utc(alert.period_start),
                created_at=as_utc(alert.created_at),
                payload=alert.document(),
            )
            # No conflict target: a known (budget, period, kind, threshold) and a known id (a
            # retried record) are both "already recorded".
            .on_conflict_do_nothing()
            .returning(table.c.id)
        )
        async with self._engine.begin() as connection:
            inserted = (await connection.execute(statement)).scalar_one_or_none()
            if inserted is None:
                return False
            sink_ids = (await connection.execute(select(AlertSinkRow.id))).scalars().all()
            if sink_ids:
                await connection.execute(
                    insert(AlertDeliveryRow),
                    [
                        {
                            "alert_id": alert.id,
                            "sink_id": sink_id,
                            "status": "pending",
                            "attempts": 0,
                            "next_attempt_at": as_utc(alert.created_at),
                            "claimed_until": None,
                            "delivered_at": None,
                            "last_error": None,
                        }
                        for sink_id in sink_ids
                    ],
                )
        return True

    async def list_alerts(self, limit: int = 100, team: str | None = None) -> list[dict[str, Any]]:
        """The newest alerts first, each its payload plus how its delivery to each sink went."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidAdminRequest(
                f"limit must be between 1 and {MAX_LIST_LIMIT}.", param="limit"
            )
        query = select(AlertRow.id, AlertRow.payload)
        if team is not None:
            query = query.where(AlertRow.team == team)
        query = query.order_by(AlertRow.created_at.desc(), AlertRow.id.desc()).limit(limit)
        async with self._engine.connect() as connection:
            alerts = (await connection.execute(query)).all()
            ids = [row[0] for row in alerts]
            deliveries = (
                await connection.execute(
                    select(*_DELIVERY_COLUMNS, AlertSinkRow.kind)
                    .join(AlertSinkRow, AlertDeliveryRow.sink_id == AlertSinkRow.id)
                    .where(AlertDeliveryRow.alert_id.in_(ids))
                    .order_by(AlertDeliveryRow.sink_id)
                )
            ).all()
        by_alert: dict[str, list[dict[str, Any]]] = {alert_id: [] for alert_id in ids}
        for row in deliveries:
            by_alert[row.alert_id].append(_delivery_document(row))
        return [{**row[1], "deliveries": by_alert[row[0]]} for row in alerts]

    async def claim_due(self, now: datetime, claim_seconds: float, limit: int) -> list[Delivery]:
        """Claim up to `limit` pending deliveries due at `now` until `now + claim_seconds`.

        The claim and the attempt count are one UPDATE over rows picked with `FOR UPDATE SKIP
        LOCKED` (Postgres; SQLite has one writer at a time), so a row claimed by one process is
        not claimable by another until its claim runs out.
        """
        now = as_utc(now)
        until = now + timedelta(seconds=claim_seconds)
        d = AlertDeliveryRow
        due = (
            select(d.alert_id, d.sink_id)
            .where(_claimable(now))
            .order_by(d.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claim = (
            update(d)
            .where(tuple_(d.alert_id, d.sink_id).in_(due), _claimable(now))
            .values(claimed_until=until, attempts=d.attempts + 1)
            .returning(d.alert_id, d.sink_id, d.attempts)
        )
        async with self._engine.begin() as connection:
            claimed = {(row[0], row[1]): row[2] for row in (await connection.execute(claim)).all()}
            if not claimed:
                return []
            rows = (
                await connection.execute(
                    select(
                        d.alert_id,
                        d.sink_id,
                        AlertRow.payload,
                        AlertSinkRow.kind,
                        AlertSinkRow.url,
                        AlertSinkRow.secret,
                    )
                    .join(AlertRow, d.alert_id == AlertRow.id)
                    .join(AlertSinkRow, d.sink_id == AlertSinkRow.id)
                    .where(d.alert_id.in_({alert_id for alert_id, _ in claimed}))
                    .order_by(d.next_attempt_at, d.alert_id, d.sink_id)
                )
            ).all()
        return [
            Delivery(
                alert_id=row[0],
                sink=_target(row[1], row[3], row[4], row[5]),
                attempt=claimed[(row[0], row[1])],
                payload=row[2],
            )
            for row in rows
            if (row[0], row[1]) in claimed
        ]

    async def delivered(self, delivery: Delivery, now: datetime) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(AlertDeliveryRow)
                .where(_row_of(delivery), AlertDeliveryRow.status == "pending")
                .values(
                    status="delivered",
                    delivered_at=as_utc(now),
                    claimed_until=None,
                    last_error=None,
                )
            )

    async def failed(
        self, delivery: Delivery, error: str, next_attempt_at: datetime | None, now: datetime
    ) -> None:
        """Record a failed attempt: retry at `next_attempt_at`, or give up when it is None."""
        values: dict[str, Any] = {"last_error": error[:MAX_ERROR_LENGTH], "claimed_until": None}
        if next_attempt_at is None:
            values["status"] = "failed"
        else:
            values["next_attempt_at"] = as_utc(next_attempt_at)
        async with self._engine.begin() as connection:
            await connection.execute(
                update(AlertDeliveryRow)
                .where(
                    _row_of(delivery),
                    AlertDeliveryRow.status == "pending",
                    # A claim that ran out and was taken by another attempt is no longer ours.
                    AlertDeliveryRow.attempts == delivery.attempt,
                )
                .values(**values)
            )


def _claimable(now: datetime) -> ColumnElement[bool]:
    d = AlertDeliveryRow
    return and_(
        d.status == "pending",
        d.next_attempt_at <= now,
        or_(d.claimed_until.is_(None), d.claimed_until < now),
    )


def _row_of(delivery: Delivery) -> ColumnElement[bool]:
    return and_(
        AlertDeliveryRow.alert_id == delivery.alert_id,
        AlertDeliveryRow.sink_id == delivery.sink.id,
    )


_DELIVERY_COLUMNS = (
    AlertDeliveryRow.alert_id,
    AlertDeliveryRow.sink_id,
    AlertDeliveryRow.status,
    AlertDeliveryRow.attempts,
    AlertDeliveryRow.last_error,
    AlertDeliveryRow.next_attempt_at,
    AlertDeliveryRow.delivered_at,
)


def _delivery_document(row: Any) -> dict[str, Any]:
    return {
        "sink_id": row.sink_id,
        "kind": row.kind,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "next_attempt_at": iso_z(row.next_attempt_at) if row.status == "pending" else None,
        "delivered_at": None if row.delivered_at is None else iso_z(row.delivered_at),
    }


def _target(sink_id: int, kind: str, url: str, secret: str | None) -> SinkTarget:
    return SinkTarget(id=sink_id, kind=_kind(kind), url=url, secret=secret)


def _kind(kind: str) -> SinkKind:
    if kind == "slack":
        return "slack"
    if kind == "webhook":
        return "webhook"
    raise ValueError(f"unknown alert sink kind {kind!r}")


def _check_sink(kind: str, url: str, secret: str | None) -> None:
    if kind not in SINK_KINDS:
        raise InvalidAdminRequest(f"kind must be one of {', '.join(SINK_KINDS)}.", param="kind")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidAdminRequest("url must be an http:// or https:// URL.", param="url")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidAdminRequest(f"url is longer than {MAX_URL_LENGTH} characters.", param="url")
    if secret is None:
        return
    if kind == "slack":
        raise InvalidAdminRequest(
            "A Slack sink takes no secret: its URL is the credential.", param="secret"
        )
    if not secret or len(secret) > MAX_SECRET_LENGTH:
        raise InvalidAdminRequest(
            f"secret must be 1 to {MAX_SECRET_LENGTH} characters.", param="secret"
        )
