"""Closed hours of self-hosted upstreams priced by GPU time, and the index that finds the calls
still waiting for their share.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001: exact on both engines, NUMERIC on Postgres and integer 1e-10 USD on SQLite.
Money = sa.Numeric(precision=20, scale=10).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "gpu_hours",
        sa.Column("upstream", sa.String(length=128), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hourly_cost_usd", Money, nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("idle_cost_usd", Money, nullable=False),
        sa.PrimaryKeyConstraint("upstream", "hour", name=op.f("pk_gpu_hours")),
    )
    op.create_index(
        op.f("ix_usage_records_upstream_price_entry"),
        "usage_records",
        ["upstream", "price_entry"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_usage_records_upstream_price_entry"), table_name="usage_records")
    op.drop_table("gpu_hours")
