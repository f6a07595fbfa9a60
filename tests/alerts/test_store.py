"""The alert store: sinks, the exactly-once record of an alert, and the delivery outbox."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.access import version
from proxy.access.errors import AlreadyExists, InvalidAdminRequest, NotFound
from proxy.alerts.store import AlertStore
from proxy.ledger.database import create_ledger_engine
from proxy.ledger.models import AlertDeliveryRow, AlertRow
from tests.alerts.conftest import CREATED_AT, PERIOD_START, make_alert

SECRET = "s3cret-never-shown-7f1d"


async def count(engine: AsyncEngine, table: type[AlertRow] | type[AlertDeliveryRow]) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(table)) or 0)


async def access_version(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return await version.current(connection)


async def test_record_is_once_per_budget_period_kind_and_threshold(
    engine: AsyncEngine, budget_id: int
) -> None:
    store = AlertStore(engine)
    await store.add_sink("webhook", "https://hooks.example.com/a", SECRET, CREATED_AT)
    await store.add_sink("slack", "https://hooks.slack.com/services/T0/B0/x", None, CREATED_AT)
    first = make_alert(budget_id)

    assert await store.record(first)
    assert not await store.record(make_alert(budget_id))  # same crossing, another process
    assert not await store.record(first)  # a retried record

    assert await count(engine, AlertRow) == 1
    assert await count(engine, AlertDeliveryRow) == 2
    # Another threshold, kind or period is another alert.
    assert await store.record(make_alert(budget_id, threshold="1.0"))
    assert await store.record(make_alert(budget_id, kind="forecast", threshold="1.0"))
    later = PERIOD_START + timedelta(days=30)
    assert await store.record(make_alert(budget_id, period_start=later))
    assert await count(engine, AlertRow) == 4
    assert await count(engine, AlertDeliveryRow) == 8


async def test_record_without_sinks_queues_nothing(engine: AsyncEngine, budget_id: int) -> None:
    store = AlertStore(engine)
    assert await store.record(make_alert(budget_id))
    assert await count(engine, AlertDeliveryRow) == 0
    assert await store.claim_due(CREATED_AT, 30, 10) == []


async def test_sinks_are_validated_and_change_the_access_version(
    engine: AsyncEngine, budget_id: int
) -> None:
    store = AlertStore(engine)
    before = await access_version(engine)
    sink = await store.add_sink("webhook", "http://receiver.local:8080/hook", SECRET, CREATED_AT)
    assert await access_version(engine) == before + 1
    assert sink.has_secret and sink.kind == "webhook" and sink.created_at == CREATED_AT

    with pytest.raises(AlreadyExists):
        await store.add_sink("webhook", "http://receiver.local:8080/hook", None, CREATED_AT)
    with pytest.raises(InvalidAdminRequest):
        await store.add_sink("webhook", "ftp://receiver.local/hook", SECRET, CREATED_AT)
    with pytest.raises(InvalidAdminRequest):
        await store.add_sink("webhook", "not a url", SECRET, CREATED_AT)
    with pytest.raises(InvalidAdminRequest):
        await store.add_sink("slack", "https://hooks.slack.com/services/x", SECRET, CREATED_AT)
    with pytest.raises(InvalidAdminRequest):
        await store.add_sink("email", "https://x.example.com", None, CREATED_AT)  # type: ignore[arg-type]

    # The same URL as another kind is another sink.
    slack = await store.add_sink("slack", "http://receiver.local:8080/hook", None, CREATED_AT)
    assert not slack.has_secret
    assert [s.id for s in await store.list_sinks()] == [sink.id, slack.id]

    assert await store.record(make_alert(budget_id))
    await store.delete_sink(sink.id)
    assert await access_version(engine) == before + 3
    assert [s.id for s in await store.list_sinks()] == [slack.id]
    assert await count(engine, AlertDeliveryRow) == 1
    with pytest.raises(NotFound):
        await store.delete_sink(sink.id)


async def test_the_secret_is_never_shown(engine: AsyncEngine, budget_id: int) -> None:
    store = AlertStore(engine)
    await store.add_sink("webhook", "https://hooks.example.com/a", SECRET, CREATED_AT)
    await store.record(make_alert(budget_id))

    (sink,) = await store.list_sinks()
    assert SECRET not in repr(sink)
    assert SECRET not in orjson.dumps(sink.document()).decode()
    assert SECRET not in orjson.dumps(await store.list_alerts()).decode()
    (delivery,) = await store.claim_due(CREATED_AT, 30, 10)
    assert delivery.sink.secret == SECRET  # the dispatcher needs it...
    assert SECRET not in repr(delivery)  # ...but it never reaches a log through a repr
    targets = await store.sink_targets()
    assert targets[sink.id].secret == SECRET


async def test_list_alerts_newest_first_with_delivery_status(
    engine: AsyncEngine, budget_id: int
) -> None:
    store = AlertStore(engine)
    sink = await store.add_sink("webhook", "https://hooks.example.com/a", SECRET, CREATED_AT)
    older = make_alert(budget_id, threshold="0.5", created_at=CREATED_AT - timedelta(hours=1))
    newer = make_alert(budget_id, threshold="0.8")
    await store.record(older)
    await store.record(newer)

    (claimed, _) = await store.claim_due(CREATED_AT, 30, 10)
    assert claimed.alert_id == older.id  # the longest due goes first
    await store.delivered(claimed, CREATED_AT + timedelta(seconds=1))

    listed = await store.list_alerts()
    assert [alert["id"] for alert in listed] == [newer.id, older.id]
    assert {k: v for k, v in listed[1].items() if k != "deliveries"} == orjson.loads(
        orjson.dumps(older.document())
    )
    assert listed[1]["deliveries"] == [
        {
            "sink_id": sink.id,
            "kind": "webhook",
            "status": "delivered",
            "attempts": 1,
            "last_error": None,
            "next_attempt_at": None,
            "delivered_at": "2026-11-24T10:30:01Z",
        }
    ]
    assert listed[0]["deliveries"][0]["status"] == "pending"
    assert listed[0]["deliveries"][0]["attempts"] == 1  # claimed, not yet answered
    assert [alert["id"] for alert in await store.list_alerts(limit=1)] == [newer.id]
    assert await store.list_alerts(team="other") == []
    with pytest.raises(InvalidAdminRequest):
        await store.list_alerts(limit=0)


async def test_a_claim_holds_until_it_runs_out(engine: AsyncEngine, budget_id: int) -> None:
    store = AlertStore(engine)
    await store.add_sink("webhook", "https://hooks.example.com/a", SECRET, CREATED_AT)
    await store.record(make_alert(budget_id))

    assert await store.claim_due(CREATED_AT - timedelta(seconds=1), 30, 10) == []  # not yet due
    (first,) = await store.claim_due(CREATED_AT, 30, 10)
    assert first.attempt == 1
    assert await store.claim_due(CREATED_AT + timedelta(seconds=29), 30, 10) == []
    (again,) = await store.claim_due(CREATED_AT + timedelta(seconds=31), 30, 10)
    assert again.attempt == 2
    # The first claimer's late failure does not undo the second claim.
    await store.failed(first, "HTTP 500", CREATED_AT + timedelta(seconds=32), CREATED_AT)
    assert await store.claim_due(CREATED_AT + timedelta(seconds=40), 30, 10) == []
    await store.failed(again, "HTTP 502", None, CREATED_AT + timedelta(seconds=41))
    (listed,) = await store.list_alerts()
    assert listed["deliveries"][0]["status"] == "failed"
    assert listed["deliveries"][0]["last_error"] == "HTTP 502"
    assert await store.claim_due(CREATED_AT + timedelta(days=1), 30, 10) == []


async def test_concurrent_claimers_never_share_a_delivery(
    engine: AsyncEngine, database_url: str, budget_id: int
) -> None:
    store = AlertStore(engine)
    for number in range(4):
        await store.add_sink("webhook", f"https://hooks.example.com/{number}", None, CREATED_AT)
    for number in range(15):
        await store.record(make_alert(budget_id, threshold=f"0.{number + 10}"))
    engines = [create_ledger_engine(database_url) for _ in range(4)]
    try:
        stores = [AlertStore(other) for other in engines]

        async def claim_all(claimer: AlertStore) -> list[tuple[str, int]]:
            claimed: list[tuple[str, int]] = []
            while batch := await claimer.claim_due(CREATED_AT, 300, 3):
                claimed.extend((delivery.alert_id, delivery.sink.id) for delivery in batch)
                await asyncio.sleep(0)
            return claimed

        results = await asyncio.gather(*(claim_all(claimer) for claimer in stores))
    finally:
        for other in engines:
            await other.dispose()
    everything = [pair for result in results for pair in result]
    assert len(everything) == 60
    assert len(set(everything)) == 60
