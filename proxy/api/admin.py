"""`/admin/*`: teams, proxy keys, budgets, alert sinks and alerts (bearer METERING_ADMIN_KEY).

Every change is written to the database (bumping the access version every replica polls) and
then reloaded into this process at once, so the next call through it already sees the change.
Amounts are decimal strings; times ISO 8601.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from proxy.access.directory import AccessDirectory
from proxy.access.store import DEFAULT_GRACE_SECONDS, AccessStore, IssuedKey, Key, KeySettings, Team
from proxy.alerts.store import AlertStore
from proxy.api.common import OpenAIErrorRoute, error_responses, require_admin_key
from proxy.api.text import Text
from proxy.budgets.model import (
    DEFAULT_THRESHOLDS,
    LIMIT_DECIMAL_PLACES,
    MAX_LIMIT_USD,
    Budget,
    BudgetSettings,
    window_of,
)
from proxy.budgets.periods import PeriodKind
from proxy.budgets.store import BudgetStore
from proxy.clock import Clock

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    route_class=OpenAIErrorRoute,
    dependencies=[Depends(require_admin_key)],
    responses=error_responses(
        _400="A parameter is invalid.",
        _401="The admin key is missing or wrong.",
        _404="No such team, key, budget or sink.",
        _409="It exists already.",
        _503="The database is unavailable.",
    ),
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeamBody(_Body):
    name: Text = Field(min_length=1, max_length=128)


class TeamDocument(BaseModel):
    name: str
    created_at: datetime


class KeyBody(_Body):
    team: Text
    name: Text | None = Field(default=None, max_length=128)
    expires_at: AwareDatetime | None = None
    models: list[Text] | None = Field(default=None, description="Model name globs; null: any.")
    end_user: Text | None = Field(default=None, max_length=256)


class KeyUpdateBody(_Body):
    """Only the fields given change."""

    name: Text | None = Field(default=None, max_length=128)
    expires_at: AwareDatetime | None = None
    models: list[Text] | None = None
    end_user: Text | None = Field(default=None, max_length=256)


class RotateBody(_Body):
    grace_seconds: int = Field(default=DEFAULT_GRACE_SECONDS, ge=0)


class KeyDocument(BaseModel):
    id: str
    team: str
    name: str | None
    prefix: str
    models: list[str] | None
    end_user: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    valid_until: datetime | None


class IssuedKeyDocument(KeyDocument):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


class BudgetBody(_Body):
    period: PeriodKind
    # Bounded to what the ledger stores exactly (see proxy/budgets/model.py).
    limit_usd: Decimal = Field(
        gt=0,
        le=MAX_LIMIT_USD,
        decimal_places=LIMIT_DECIMAL_PLACES,
        description="USD, as a decimal string.",
    )
    hard: bool = False
    thresholds: list[Decimal] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    timezone: Text = "UTC"
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None


class BudgetDocument(BaseModel):
    team: str
    key_id: str | None
    period: PeriodKind
    limit_usd: Decimal
    hard: bool
    thresholds: list[float]
    timezone: str
    window_start: datetime | None
    window_end: datetime | None


class SpendDocument(BaseModel):
    team: str
    key_id: str | None
    period: PeriodKind
    period_start: datetime
    period_end: datetime
    spend_usd: Decimal
    reserved_usd: Decimal = Field(description="Budget replicas hold for calls in flight.")
    limit_usd: Decimal
    hard: bool
    calls: int
    unpriced_calls: int = Field(description="Calls of unknown price: not in spend_usd.")


class SinkBody(_Body):
    kind: Literal["webhook", "slack"]
    url: Text = Field(max_length=2048)
    secret: Text | None = Field(default=None, max_length=256)


class SinkDocument(BaseModel):
    id: int
    kind: str
    url: str
    has_secret: bool
    created_at: datetime


class TeamList(BaseModel):
    data: list[TeamDocument]


class KeyList(BaseModel):
    data: list[KeyDocument]


class SinkList(BaseModel):
    data: list[SinkDocument]


class AlertList(BaseModel):
    data: list[dict[str, Any]]


class Deleted(BaseModel):
    id: str
    deleted: bool = True


def _access(request: Request) -> AccessStore:
    return AccessStore(request.app.state.ledger_engine)


def _budgets(request: Request) -> BudgetStore:
    return BudgetStore(request.app.state.ledger_engine)


def _alerts(request: Request) -> AlertStore:
    return AlertStore(request.app.state.ledger_engine)


def _now(request: Request) -> datetime:
    clock: Clock = request.app.state.clock
    return clock()


async def _reload(request: Request) -> None:
    directory: AccessDirectory = request.app.state.access
    await directory.reload()


def _team_document(team: Team) -> TeamDocument:
    return TeamDocument(name=team.name, created_at=team.created_at)


def _key_document(key: Key) -> dict[str, Any]:
    return {
        "id": key.id,
        "team": key.team,
        "name": key.name,
        "prefix": key.prefix,
        "models": None if key.models is None else list(key.models),
        "end_user": key.end_user,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "valid_until": key.valid_until,
    }


def _issued_document(issued: IssuedKey) -> IssuedKeyDocument:
    return IssuedKeyDocument(**_key_document(issued.key), key=issued.secret)


def _budget_document(budget: Budget) -> BudgetDocument:
    settings = budget.settings
    return BudgetDocument(
        team=budget.team,
        key_id=budget.key_id,
        period=settings.period,
        limit_usd=settings.limit_usd,
        hard=settings.hard,
        thresholds=[float(t) for t in settings.thresholds],
        timezone=settings.timezone,
        window_start=settings.window[0] if settings.window else None,
        window_end=settings.window[1] if settings.window else None,
    )


def _budget_settings(body: BudgetBody) -> BudgetSettings:
    return BudgetSettings(
        period=body.period,
        limit_usd=body.limit_usd,
        hard=body.hard,
        thresholds=tuple(body.thresholds),
        timezone=body.timezone,
        window=window_of(body.window_start, body.window_end),
    )


# Teams


@router.post("/teams", status_code=201)
async def create_team(body: TeamBody, request: Request) -> TeamDocument:
    team = await _access(request).create_team(body.name, _now(request))
    await _reload(request)
    return _team_document(team)


@router.get("/teams")
async def list_teams(request: Request) -> TeamList:
    return TeamList(data=[_team_document(team) for team in await _access(request).list_teams()])


@router.patch("/teams/{name}")
async def rename_team(name: Text, body: TeamBody, request: Request) -> TeamDocument:
    team = await _access(request).rename_team(name, body.name, _now(request))
    await _reload(request)
    return _team_document(team)


@router.delete("/teams/{name}")
async def delete_team(name: Text, request: Request) -> Deleted:
    """Delete a team with its keys and budgets (its recorded usage stays)."""
    await _access(request).delete_team(name)
    await _reload(request)
    return Deleted(id=name)


# Keys


@router.post("/keys", status_code=201)
async def create_key(body: KeyBody, request: Request) -> IssuedKeyDocument:
    settings = KeySettings(
        name=body.name,
        expires_at=body.expires_at,
        models=None if body.models is None else tuple(body.models),
        end_user=body.end_user,
    )
    issued = await _access(request).create_key(body.team, settings, _now(request))
    await _reload(request)
    return _issued_document(issued)


@router.get("/keys")
async def list_keys(
    request: Request,
    team: Annotated[Text | None, Query(description="Only this team's keys.")] = None,
) -> KeyList:
    keys = await _access(request).list_keys(team)
    return KeyList(data=[KeyDocument(**_key_document(key)) for key in keys])


@router.get("/keys/{key_id}")
async def get_key(key_id: Text, request: Request) -> KeyDocument:
    return KeyDocument(**_key_document(await _access(request).get_key(key_id)))


@router.patch("/keys/{key_id}")
async def update_key(key_id: Text, body: KeyUpdateBody, request: Request) -> KeyDocument:
    store = _access(request)
    current = await store.get_key(key_id)
    given = body.model_fields_set
    settings = KeySettings(
        name=body.name if "name" in given else current.name,
        expires_at=body.expires_at if "expires_at" in given else current.expires_at,
        models=(
            (None if body.models is None else tuple(body.models))
            if "models" in given
            else current.models
        ),
        end_user=body.end_user if "end_user" in given else current.end_user,
    )
    key = await store.update_key(key_id, settings)
    await _reload(request)
    return KeyDocument(**_key_document(key))


@router.post("/keys/{key_id}/rotate", status_code=201)
async def rotate_key(
    key_id: Text, request: Request, body: RotateBody | None = None
) -> IssuedKeyDocument:
    """A new key with the same settings; the old one keeps working for `grace_seconds`."""
    grace = (body or RotateBody()).grace_seconds
    issued = await _access(request).rotate_key(key_id, grace, _now(request))
    await _reload(request)
    return _issued_document(issued)


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: Text, request: Request) -> KeyDocument:
    """Revoke a key: from now on it gets 401."""
    key = await _access(request).revoke_key(key_id, _now(request))
    await _reload(request)
    return KeyDocument(**_key_document(key))


# Budgets


async def _key_team(request: Request, key_id: str) -> str:
    return (await _access(request).get_key(key_id)).team


@router.put("/teams/{name}/budget")
async def set_team_budget(name: Text, body: BudgetBody, request: Request) -> BudgetDocument:
    budget = await _budgets(request).set_budget(name, None, _budget_settings(body), _now(request))
    await _reload(request)
    return _budget_document(budget)


@router.put("/keys/{key_id}/budget")
async def set_key_budget(key_id: Text, body: BudgetBody, request: Request) -> BudgetDocument:
    team = await _key_team(request, key_id)
    budget = await _budgets(request).set_budget(team, key_id, _budget_settings(body), _now(request))
    await _reload(request)
    return _budget_document(budget)


@router.get("/teams/{name}/budget")
async def get_team_budget(name: Text, request: Request) -> BudgetDocument:
    return _budget_document(await _budgets(request).get_budget(name))


@router.get("/keys/{key_id}/budget")
async def get_key_budget(key_id: Text, request: Request) -> BudgetDocument:
    team = await _key_team(request, key_id)
    return _budget_document(await _budgets(request).get_budget(team, key_id))


@router.delete("/teams/{name}/budget")
async def delete_team_budget(name: Text, request: Request) -> Deleted:
    await _budgets(request).delete_budget(name)
    await _reload(request)
    return Deleted(id=name)


@router.delete("/keys/{key_id}/budget")
async def delete_key_budget(key_id: Text, request: Request) -> Deleted:
    team = await _key_team(request, key_id)
    await _budgets(request).delete_budget(team, key_id)
    await _reload(request)
    return Deleted(id=key_id)


async def _spend(request: Request, budget: Budget) -> SpendDocument:
    store, now = _budgets(request), _now(request)
    period = budget.period_at(now)
    spend = await store.spend(budget, period)
    return SpendDocument(
        team=budget.team,
        key_id=budget.key_id,
        period=budget.settings.period,
        period_start=period.start,
        period_end=period.end,
        spend_usd=spend.cost_usd,
        reserved_usd=await store.leased(budget.id, period.start, now),
        limit_usd=budget.settings.limit_usd,
        hard=budget.settings.hard,
        calls=spend.calls,
        unpriced_calls=spend.unpriced_calls,
    )


@router.get("/teams/{name}/spend")
async def team_spend(name: Text, request: Request) -> SpendDocument:
    """The current period's spend against the team's budget."""
    return await _spend(request, await _budgets(request).get_budget(name))


@router.get("/keys/{key_id}/spend")
async def key_spend(key_id: Text, request: Request) -> SpendDocument:
    team = await _key_team(request, key_id)
    return await _spend(request, await _budgets(request).get_budget(team, key_id))


# Alerts


@router.post("/alert-sinks", status_code=201)
async def add_alert_sink(body: SinkBody, request: Request) -> SinkDocument:
    sink = await _alerts(request).add_sink(body.kind, body.url, body.secret, _now(request))
    return SinkDocument(
        id=sink.id,
        kind=sink.kind,
        url=sink.url,
        has_secret=sink.has_secret,
        created_at=sink.created_at,
    )


@router.get("/alert-sinks")
async def list_alert_sinks(request: Request) -> SinkList:
    sinks = await _alerts(request).list_sinks()
    return SinkList(
        data=[
            SinkDocument(
                id=s.id, kind=s.kind, url=s.url, has_secret=s.has_secret, created_at=s.created_at
            )
            for s in sinks
        ]
    )


# Sink ids are 32-bit INTEGERs: a larger one names no sink, and Postgres refuses to compare it.
SinkId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.delete("/alert-sinks/{sink_id}")
async def delete_alert_sink(sink_id: SinkId, request: Request) -> Deleted:
    await _alerts(request).delete_sink(sink_id)
    return Deleted(id=str(sink_id))


@router.get("/alerts")
async def list_alerts(
    request: Request,
    team: Annotated[Text | None, Query(description="Only this team's alerts.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    """Alerts raised, newest first, with how their delivery to each sink went."""
    return AlertList(data=await _alerts(request).list_alerts(limit=limit, team=team))
