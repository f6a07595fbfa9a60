"""Budget alerts end to end: each threshold reaches a real receiver once, signed, across a
restart of the proxy; a forecast alert fires for a steep burn rate and not for a flat one."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import openai
from prometheus_client import CollectorRegistry

from proxy.access.directory import AccessDirectory
from proxy.access.store import AccessStore
from proxy.alerts.evaluate import AlertEvaluator
from proxy.alerts.sinks import verify_signature
from proxy.alerts.store import AlertStore
from proxy.app import create_app
from proxy.budgets.model import BudgetSettings
from proxy.budgets.store import BudgetStore
from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.models import BudgetSpendRow
from proxy.metrics import Metrics
from proxy.settings import load_settings
from tests.conftest import single_upstream_config
from tests.support.alert_receiver import AlertReceiver
from tests.support.clock import FakeClock
from tests.support.databases import sqlite_url
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import serve_in_thread

KEY = "sk-mp-alert-test-key-0123456789abcdefghijklmnopqrs"
SECRET = "webhook-secret-for-tests"
HI = [{"role": "user", "content": "Hi"}]


def _config(upstream_url: str, receiver_url: str, journal: Path) -> str:
    return (
        single_upstream_config(upstream_url)
        + '[prices."gpt-4o"]\ninput = 1000000\noutput = 1000000\n'  # $18 a call
        + f'[ledger]\njournal_dir = "{journal}"\n'
        + "[alerts]\ncheck_seconds = 0.2\n"
        + f'[[alert_sinks]]\nkind = "webhook"\nurl = "{receiver_url}"\n'
        + 'secret_env = "ALERT_SECRET"\n'
        + '[[teams]]\nname = "search"\n[[teams.keys]]\nkey_env = "SEARCH_KEY"\n'
        + 'end_user = "ana"\n'
        + '[teams.budget]\nperiod = "monthly"\nlimit_usd = "50"\nthresholds = [0.5, 0.8]\n'
    )


def _chat(proxy_url: str) -> None:
    client = openai.OpenAI(base_url=f"{proxy_url}/v1", api_key=KEY, max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]


def test_each_threshold_alert_arrives_once_signed_across_a_restart(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    _, upstream_url = fake_upstream
    receiver = AlertReceiver()
    with serve_in_thread(receiver) as receiver_root:
        config_path = tmp_path / "proxy.toml"
        config_path.write_text(
            _config(upstream_url, f"{receiver_root}/alerts", tmp_path / "journal")
        )
        environ = {
            "METERING_CONFIG": str(config_path),
            "METERING_DATABASE_URL": sqlite_url(tmp_path / "ledger"),
            "SEARCH_KEY": KEY,
            "ALERT_SECRET": SECRET,
        }

        def proxy() -> object:
            return serve_in_thread(create_app(load_settings(environ)))

        with proxy() as url:  # type: ignore[attr-defined]
            _chat(url)
            _chat(url)  # $36 of $50: past 50%, and at this pace over the limit within hours
            before_restart = receiver.wait_for(2)
        with proxy() as url:  # type: ignore[attr-defined]
            _chat(url)  # $54: past 80% (and over the limit, which is not a threshold here)
            after_restart = receiver.wait_for(3)[2:]
            time.sleep(1)  # several more checks, and none sends anything again

    assert len(receiver.requests) == 3
    by_kind = {(r.json()["kind"], r.json()["threshold"]): r for r in before_restart}
    assert set(by_kind) == {("threshold", 0.5), ("forecast", 1.0)}
    first, second = by_kind["threshold", 0.5], after_restart[0]
    for request in receiver.requests:
        signature = request.headers["x-metering-signature"]
        assert verify_signature(request.body, SECRET, signature)
        assert not verify_signature(request.body, "another-secret", signature)
    alert = first.json()
    assert (alert["team"], alert["kind"], alert["threshold"]) == ("search", "threshold", 0.5)
    assert Decimal(alert["spend_usd"]) == 36 and Decimal(alert["limit_usd"]) == 50
    assert alert["top_models"] == [{"model": "gpt-4o", "cost_usd": "36.0000000000", "calls": 2}]
    assert alert["top_users"][0]["user"] == "ana"
    assert (second.json()["threshold"], Decimal(second.json()["spend_usd"])) == (0.8, 54)


NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)


async def _evaluator_with_spend(
    database_url: str, spend_by_hours_ago: dict[float, str]
) -> tuple[AlertEvaluator, AlertStore]:
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    await AccessStore(engine).create_team("search", NOW)
    await BudgetStore(engine).set_budget(
        "search", None, BudgetSettings(period="monthly", limit_usd=Decimal(100)), NOW
    )
    async with engine.begin() as connection:
        for hours_ago, cost in spend_by_hours_ago.items():
            bucket = (NOW - timedelta(hours=hours_ago)).replace(minute=0)
            await connection.execute(
                BudgetSpendRow.__table__.insert(),
                {
                    "team": "search",
                    "key_id": "",
                    "bucket_start": bucket,
                    "calls": 1,
                    "unpriced_calls": 0,
                    "cost_usd": Decimal(cost),
                },
            )
    directory = AccessDirectory(engine)
    await directory.reload()
    alerts = AlertStore(engine)
    evaluator = AlertEvaluator(
        engine,
        directory,
        alerts,
        Metrics(CollectorRegistry()).budgets,
        FakeClock(NOW),
        forecast_window=timedelta(hours=6),
        on_recorded=lambda: None,
    )
    return evaluator, alerts


async def test_a_steep_burn_rate_raises_a_forecast_alert_with_its_date(database_url: str) -> None:
    # $30 in the last six hours: $5 an hour reaches the $100 limit in 14 hours.
    evaluator, _ = await _evaluator_with_spend(database_url, {1: "10", 3: "10", 5: "10"})

    raised = await evaluator.check()

    assert [(alert.kind, alert.spend_usd) for alert in raised] == [("forecast", Decimal(30))]
    assert raised[0].forecast_at == NOW + timedelta(hours=14)


async def test_a_flat_burn_rate_raises_no_forecast_alert(database_url: str) -> None:
    # $30 nine days ago, ten cents in the last hours: the month ends long before the limit.
    evaluator, _ = await _evaluator_with_spend(database_url, {216: "30", 2: "0.10"})

    assert await evaluator.check() == []


async def test_a_forecast_alert_is_raised_once_per_period(database_url: str) -> None:
    evaluator, alerts = await _evaluator_with_spend(database_url, {1: "30"})
    await evaluator.check()

    assert await evaluator.check() == []
    assert [alert["kind"] for alert in await alerts.list_alerts()] == ["forecast"]
