"""The ledger's tables (SQLAlchemy 2, typed). Postgres in production, SQLite embedded.

`usage_records` has one row per call; as OpenAI counts them, `input_tokens` includes
`cached_input_tokens` and `output_tokens` includes `reasoning_tokens`. `cost_usd` is NULL when
the model's price is unknown. `hourly_usage` is the rollup reports over long windows read.
The table is not partitioned: see `docs/ledger.md` for why and for retention.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

MONEY_SCALE = 10
# The most a money column holds on both engines: SQLite's 64-bit count of 1e-10 USD (about 922
# million USD) is the smaller bound; Postgres's NUMERIC(20, 10) holds up to 1e10.
LARGEST_MONEY = Decimal((1 << 63) - 1).scaleb(-MONEY_SCALE)


class Money(TypeDecorator[Decimal]):
    """USD to 10 decimal places, exact on both engines: NUMERIC(20, 10) on Postgres; on SQLite
    (which has no decimal type and would sum floats) an integer count of 1e-10 USD."""

    impl = Numeric(20, 10)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, 10))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return int(Decimal(value).scaleb(MONEY_SCALE).to_integral_value())

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_SCALE)
        return Decimal(value)


# JSONB on Postgres (indexable, compact), JSON text elsewhere.
Document = JSON().with_variant(JSONB(), "postgresql")
UtcDateTime = DateTime(timezone=True)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UsageRow(Base):
    __tablename__ = "usage_records"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    team: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str | None] = mapped_column(String(64))
    end_user: Mapped[str | None] = mapped_column(String(256))
    tags: Mapped[dict[str, str]] = mapped_column(Document, default=dict)
    trace_id: Mapped[str | None] = mapped_column(String(128))
    parent_id: Mapped[str | None] = mapped_column(String(128))
    upstream: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(256))
    endpoint: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    audio_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    image_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    audio_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    accepted_prediction_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    rejected_prediction_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    images: Mapped[int] = mapped_column(Integer, default=0)
    image_size: Mapped[str | None] = mapped_column(String(32))
    image_quality: Mapped[str | None] = mapped_column(String(32))
    input_characters: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[Decimal] = mapped_column(Numeric(14, 3), default=Decimal(0))
    # The hidden-prompt split of the input tokens (chat and responses calls).
    prompt_system_tokens: Mapped[int | None] = mapped_column(BigInteger)
    prompt_tools_tokens: Mapped[int | None] = mapped_column(BigInteger)
    prompt_history_tokens: Mapped[int | None] = mapped_column(BigInteger)
    prompt_latest_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_usd: Mapped[Decimal | None] = mapped_column(Money())
    price_entry: Mapped[str | None] = mapped_column(String(256))
    price_effective_from: Mapped[datetime | None] = mapped_column(UtcDateTime)
    estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    service_tier: Mapped[str | None] = mapped_column(String(32))
    batch: Mapped[bool] = mapped_column(Boolean, default=False)
    latency_seconds: Mapped[float] = mapped_column(Float)
    time_to_first_token_seconds: Mapped[float | None] = mapped_column(Float)
    overhead_seconds: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index(None, "created_at"),
        Index(None, "team", "created_at"),
        Index(None, "model", "created_at"),
        Index(None, "end_user", "created_at"),
        Index(None, "trace_id"),
        # The GPU-hour split looks up an upstream's calls still waiting for their price.
        Index(None, "upstream", "price_entry"),
    )


class HourlyUsageRow(Base):
    """Rollup: one row per hour x team x model x upstream."""

    __tablename__ = "hourly_usage"

    hour: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    team: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    upstream: Mapped[str] = mapped_column(String(128), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    unpriced_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    audio_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    audio_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    images: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_system_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tools_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))

    __table_args__ = (Index(None, "team", "hour"),)


class TraceRow(Base):
    """One row per agent trace: its calls, tokens and cost so far. Clients choose trace ids, so
    a trace is a team's: two teams sending the same id have a trace each."""

    __tablename__ = "traces"

    team: Mapped[str] = mapped_column(String(128), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_call_at: Mapped[datetime] = mapped_column(UtcDateTime)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    unpriced_calls: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index(None, "team", "last_call_at"),)


class GpuHourRow(Base):
    """A closed hour of a self-hosted upstream priced by GPU time: what it cost, whom it served.

    `idle_cost_usd` is the cost no call carries: the whole hour when it served no call.
    """

    __tablename__ = "gpu_hours"

    upstream: Mapped[str] = mapped_column(String(128), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    hourly_cost_usd: Mapped[Decimal] = mapped_column(Money())
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    idle_cost_usd: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))


class TeamRow(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class KeyRow(Base):
    """A proxy key: only its hash and a short visible prefix are stored."""

    __tablename__ = "keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    models: Mapped[list[str] | None] = mapped_column(Document)
    end_user: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Set on the old key when it is rotated: it stays valid until then.
    valid_until: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index(None, "team_id"),)


class BudgetRow(Base):
    """A team's (or one key's) spending limit per period."""

    __tablename__ = "budgets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("keys.id", ondelete="CASCADE"))
    period: Mapped[str] = mapped_column(String(16))
    limit_usd: Mapped[Decimal] = mapped_column(Money())
    hard: Mapped[bool] = mapped_column(Boolean, default=False)
    thresholds: Mapped[list[Any]] = mapped_column(Document)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    window_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    window_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("team_id", "key_id"),)


class AccessVersionRow(Base):
    """One row, bumped in the same transaction as any change to teams, keys, budgets or alert
    sinks: each replica polls it to know when to reload its in-memory copy."""

    __tablename__ = "access_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class BudgetSpendRow(Base):
    """Rollup for budgets: spend per team x key x quarter hour (every time zone's day starts
    on a quarter hour). `key_id` is '' for calls made without a proxy key."""

    __tablename__ = "budget_spend"

    team: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    unpriced_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))

    __table_args__ = (Index(None, "team", "bucket_start"),)


class BudgetLeaseRow(Base):
    """A slice of a hard budget one proxy process holds to admit calls without a query each."""

    __tablename__ = "budget_leases"

    budget_id: Mapped[int] = mapped_column(
        ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    holder: Mapped[str] = mapped_column(String(64), primary_key=True)
    amount_usd: Mapped[Decimal] = mapped_column(Money())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AlertRow(Base):
    """A budget alert: unique per budget x period x kind x threshold, so it is sent once."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"))
    team: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # threshold | forecast
    threshold: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    period: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The JSON body every sink is sent (webhooks get it as is, Slack a text made from it).
    payload: Mapped[dict[str, Any]] = mapped_column(Document)

    __table_args__ = (
        UniqueConstraint("budget_id", "period_start", "kind", "threshold"),
        Index(None, "created_at"),
    )


class AlertSinkRow(Base):
    __tablename__ = "alert_sinks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # webhook | slack
    url: Mapped[str] = mapped_column(String(2048))
    # The HMAC secret of a webhook; it must be kept to sign with, and is never shown again.
    secret: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("kind", "url"),)


class AlertDeliveryRow(Base):
    """The outbox: one row per alert x sink until it is delivered (or given up on)."""

    __tablename__ = "alert_deliveries"

    alert_id: Mapped[str] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True
    )
    sink_id: Mapped[int] = mapped_column(
        ForeignKey("alert_sinks.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # A process sending it holds it until then, so two replicas never send it together.
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(String(512))

    __table_args__ = (Index(None, "status", "next_attempt_at"),)
