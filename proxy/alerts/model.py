"""A budget alert, as decided and as sent: the document webhooks receive (DESIGN.md's shape)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from proxy.clock import iso_z

AlertKind = Literal["threshold", "forecast"]


@dataclass(frozen=True, slots=True)
class Ranked:
    """One line of a top list: a model or an end user and what it cost in the period."""

    name: str
    cost_usd: Decimal
    calls: int


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    budget_id: int
    team: str
    key_id: str | None
    kind: AlertKind
    threshold: Decimal  # the share of the limit crossed; for a forecast, 1 (the limit)
    period: str  # daily | weekly | monthly | window
    period_start: datetime
    period_end: datetime
    spend_usd: Decimal
    limit_usd: Decimal
    unpriced_calls: int
    forecast_at: datetime | None  # when the limit is forecast to be reached (forecast alerts)
    top_models: tuple[Ranked, ...]
    top_users: tuple[Ranked, ...]
    created_at: datetime

    def document(self) -> dict[str, Any]:
        """The JSON body of a webhook alert. Amounts are decimal strings, times ISO 8601 UTC."""
        return {
            "id": self.id,
            "team": self.team,
            "key_id": self.key_id,
            "kind": self.kind,
            "threshold": float(self.threshold),
            "period": self.period,
            "period_start": iso_z(self.period_start),
            "period_end": iso_z(self.period_end),
            "spend_usd": str(self.spend_usd),
            "limit_usd": str(self.limit_usd),
            "unpriced_calls": self.unpriced_calls,
            "forecast_at": None if self.forecast_at is None else iso_z(self.forecast_at),
            "top_models": [_ranked(r, "model") for r in self.top_models],
            "top_users": [_ranked(r, "user") for r in self.top_users],
            "created_at": iso_z(self.created_at),
        }


def _ranked(ranked: Ranked, name: str) -> dict[str, Any]:
    return {name: ranked.name, "cost_usd": str(ranked.cost_usd), "calls": ranked.calls}
