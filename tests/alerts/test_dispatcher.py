"""Alerts reach real HTTP receivers once, signed, through failures, retries and replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.alerts.dispatcher import AlertDispatcher
from proxy.alerts.sinks import verify_signature
from proxy.alerts.store import AlertStore, Delivery
from proxy.ledger.database import create_ledger_engine
from tests.alerts.conftest import CREATED_AT, FakeClock, make_alert
from tests.support.alert_receiver import AlertReceiver, serve_alert_receiver
from tests.support.waiting import eventually

SECRET = "whsec-2b7e151628aed2a6"


def new_counter() -> Counter:
    return Counter(
        "llm_proxy_alert_deliveries",
        "Alert deliveries by outcome.",
        ["sink_kind", "outcome"],
        registry=CollectorRegistry(),
    )


def counted(counter: Counter, kind: str, outcome: str) -> float:
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels == {
                "sink_kind": kind,
                "outcome": outcome,
            }:
                return sample.value
    return 0.0


@asynccontextmanager
async def dispatcher_of(store: AlertStore, **options: Any) -> AsyncIterator[AlertDispatcher]:
    dispatcher = AlertDispatcher(store, options.pop("deliveries", None) or new_counter(), **options)
    try:
        yield dispatcher
    finally:
        await dispatcher.aclose()


@asynccontextmanager
async def running(dispatcher: AlertDispatcher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(dispatcher.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def statuses(store: AlertStore, alert_id: str | None = None) -> list[str]:
    return [
        delivery["status"]
        for alert in await store.list_alerts()
        if alert_id in (None, alert["id"])
        for delivery in alert["deliveries"]
    ]


async def test_a_webhook_arrives_once_signed(
    engine: AsyncEngine, budget_id: int, receiver: tuple[AlertReceiver, str]
) -> None:
    fake, url = receiver
    store = AlertStore(engine)
    await store.add_sink("webhook", url, SECRET, CREATED_AT)
    alert = make_alert(budget_id)
    assert await store.record(alert)
    counter = new_counter()

    async with dispatcher_of(store, deliveries=counter, clock=FakeClock()) as dispatcher:
        assert await dispatcher.run_once() == 1
        assert await dispatcher.run_once() == 0

    (request,) = fake.requests
    assert request.answered == 200 and request.path == "/alerts"
    assert orjson.loads(request.body) == orjson.loads(orjson.dumps(alert.document()))
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-metering-alert-id"] == alert.id
    assert verify_signature(request.body, SECRET, request.headers["x-metering-signature"])
    assert not verify_signature(request.body, "wrong", request.headers["x-metering-signature"])
    assert counted(counter, "webhook", "delivered") == 1
    (listed,) = await store.list_alerts()
    assert listed["deliveries"][0]["status"] == "delivered"
    assert listed["deliveries"][0]["attempts"] == 1
    assert listed["deliveries"][0]["delivered_at"] == "2026-11-24T10:30:00Z"


async def test_slack_gets_readable_text(
    engine: AsyncEngine, budget_id: int, receiver: tuple[AlertReceiver, str]
) -> None:
    fake, url = receiver
    store = AlertStore(engine)
    await store.add_sink("slack", url, None, CREATED_AT)
    await store.record(make_alert(budget_id))

    async with dispatcher_of(store, clock=FakeClock()) as dispatcher:
        assert await dispatcher.run_once() == 1

    (request,) = fake.requests
    assert "x-metering-signature" not in request.headers
    text = request.json()["text"]
    assert "search" in text and "$8.03" in text and "$10.00" in text and "80%" in text


async def test_a_failing_receiver_gets_it_on_a_later_attempt(
    engine: AsyncEngine, budget_id: int
) -> None:
    with serve_alert_receiver(AlertReceiver(fail_first=2)) as (fake, url):
        store = AlertStore(engine)
        await store.add_sink("webhook", url, SECRET, CREATED_AT)
        await store.record(make_alert(budget_id))
        clock = FakeClock()
        counter = new_counter()
        options = {"clock": clock, "deliveries": counter, "first_backoff_seconds": 1.0}
        async with dispatcher_of(store, **options) as dispatcher:
            assert await dispatcher.run_once() == 1  # 500
            assert await dispatcher.run_once() == 0  # backing off
            clock.advance(1)
            assert await dispatcher.run_once() == 1  # 500 again
            clock.advance(1.9)
            assert await dispatcher.run_once() == 0  # the backoff doubled
            clock.advance(0.1)
            assert await dispatcher.run_once() == 1  # 200
            clock.advance(3600)
            assert await dispatcher.run_once() == 0

    assert [request.answered for request in fake.requests] == [500, 500, 200]
    assert len({request.body for request in fake.requests}) == 1
    (delivery,) = (await store.list_alerts())[0]["deliveries"]
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 3
    assert delivery["last_error"] is None
    assert counted(counter, "webhook", "retry") == 2
    assert counted(counter, "webhook", "delivered") == 1


async def test_a_dead_receiver_is_given_up_on_and_the_dispatcher_keeps_going(
    engine: AsyncEngine, budget_id: int
) -> None:
    with serve_alert_receiver(AlertReceiver(status=500)) as (fake, url):
        store = AlertStore(engine)
        await store.add_sink("webhook", url, SECRET, CREATED_AT)
        first = make_alert(budget_id, created_at=datetime.now(UTC))
        await store.record(first)
        counter = new_counter()
        options = {
            "deliveries": counter,
            "max_attempts": 3,
            "first_backoff_seconds": 0.01,
            "poll_seconds": 0.01,
        }
        async with dispatcher_of(store, **options) as dispatcher, running(dispatcher) as task:
            await eventually(lambda: _all(store, "failed"))
            assert [request.answered for request in fake.requests] == [500, 500, 500]
            assert counted(counter, "webhook", "failed") == 1
            assert counted(counter, "webhook", "retry") == 2

            fake.answer(200)
            second = make_alert(budget_id, threshold="1.0", created_at=datetime.now(UTC))
            await store.record(second)
            dispatcher.wake()
            await fake.received(1)
            await eventually(lambda: _all(store, "delivered", alert_id=second.id))
            assert not task.done()

    (request,) = fake.accepted
    assert request.json()["id"] == second.id
    by_id = {alert["id"]: alert["deliveries"][0] for alert in await store.list_alerts()}
    assert by_id[first.id]["status"] == "failed"
    assert by_id[first.id]["attempts"] == 3
    assert by_id[first.id]["last_error"] == "HTTP 500"
    assert by_id[second.id]["status"] == "delivered"


async def test_wake_delivers_without_waiting_for_the_poll(
    engine: AsyncEngine, budget_id: int, receiver: tuple[AlertReceiver, str]
) -> None:
    fake, url = receiver
    store = AlertStore(engine)
    await store.add_sink("webhook", url, SECRET, CREATED_AT)
    async with dispatcher_of(store, poll_seconds=600) as dispatcher, running(dispatcher):
        await asyncio.sleep(0.1)  # the first pass found nothing: it waits for the poll now
        await store.record(make_alert(budget_id, created_at=datetime.now(UTC)))
        dispatcher.wake()
        await fake.received(1, seconds=5)


async def test_unreachable_sink_errors_do_not_reveal_the_url(
    engine: AsyncEngine, budget_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    store = AlertStore(engine)
    url = "http://127.0.0.1:9/services/T0SECRETPATH?token=querysecret"
    await store.add_sink("slack", url, None, CREATED_AT)
    await store.record(make_alert(budget_id))
    counter = new_counter()
    with caplog.at_level(logging.WARNING, logger="proxy.alerts"):
        async with dispatcher_of(store, clock=FakeClock(), deliveries=counter) as dispatcher:
            assert await dispatcher.run_once() == 1

    (delivery,) = (await store.list_alerts())[0]["deliveries"]
    assert delivery["status"] == "pending" and delivery["last_error"]
    assert counted(counter, "slack", "retry") == 1
    assert "slack sink" in caplog.text and "127.0.0.1:9" in caplog.text
    for revealing in ("SECRETPATH", "querysecret"):
        assert revealing not in delivery["last_error"]
        assert revealing not in caplog.text


async def test_two_dispatchers_deliver_each_alert_once(
    engine: AsyncEngine, database_url: str, budget_id: int, receiver: tuple[AlertReceiver, str]
) -> None:
    fake, url = receiver
    store = AlertStore(engine)
    await store.add_sink("webhook", url, SECRET, CREATED_AT)
    now = datetime.now(UTC)
    alerts = [make_alert(budget_id, threshold=f"0.{n + 10}", created_at=now) for n in range(20)]
    for alert in alerts:
        await store.record(alert)

    other_engine = create_ledger_engine(database_url)
    try:
        options = {"poll_seconds": 0.01, "batch_size": 3}
        async with (
            dispatcher_of(AlertStore(engine), **options) as one,
            dispatcher_of(AlertStore(other_engine), **options) as two,
            running(one),
            running(two),
        ):
            await fake.received(20)
            await eventually(lambda: _all(store, "delivered"))
            await asyncio.sleep(0.2)  # room for a duplicate to show up
    finally:
        await other_engine.dispose()

    ids = [request.headers["x-metering-alert-id"] for request in fake.requests]
    assert sorted(ids) == sorted(alert.id for alert in alerts)


async def _all(store: AlertStore, status: str, alert_id: str | None = None) -> bool:
    found = await statuses(store, alert_id)
    return bool(found) and all(s == status for s in found)


class FlakyStore(AlertStore):
    """A store whose first claims fail as an unreachable database does."""

    def __init__(self, engine: AsyncEngine, failures: int) -> None:
        super().__init__(engine)
        self.failures = failures

    async def claim_due(self, now: datetime, claim_seconds: float, limit: int) -> list[Delivery]:
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database is down"))
        return await super().claim_due(now, claim_seconds, limit)


async def test_database_errors_are_retried_on_the_next_pass(
    engine: AsyncEngine,
    budget_id: int,
    receiver: tuple[AlertReceiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, url = receiver
    store = FlakyStore(engine, failures=3)
    await store.add_sink("webhook", url, SECRET, CREATED_AT)
    await store.record(make_alert(budget_id, created_at=datetime.now(UTC)))
    with caplog.at_level(logging.WARNING, logger="proxy.alerts"):
        async with dispatcher_of(store, poll_seconds=0.01) as dispatcher, running(dispatcher):
            await fake.received(1)
    assert store.failures == 0
    assert caplog.text.count("alert delivery pass failed") == 3
