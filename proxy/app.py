"""The ASGI application: `/v1/*` goes to the forwarding route, everything else to FastAPI."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

from proxy.access.declared import apply_declared
from proxy.access.directory import AccessDirectory
from proxy.alerts.dispatcher import AlertDispatcher
from proxy.alerts.evaluate import AlertEvaluator
from proxy.alerts.store import AlertStore
from proxy.api import admin, ops, usage
from proxy.api.common import framework_refusal, unexpected_error
from proxy.api.openai import OpenAIRoute
from proxy.api.report_runner.messages import WorkerConfig
from proxy.api.report_runner.runner import ReportRunner
from proxy.asgi import ASGIApp, Receive, Scope, Send
from proxy.budgets.admission import Admission
from proxy.budgets.guard import BudgetGuard, LeasePolicy
from proxy.budgets.store import BudgetStore
from proxy.budgets.trace_limits import TraceLimiter
from proxy.clock import Clock, utc_now
from proxy.ids import new_request_id
from proxy.ledger.database import DATABASE_ERRORS, create_ledger_engine
from proxy.ledger.gpu_hours import price_gpu_hours
from proxy.ledger.jobs import run_every
from proxy.ledger.migrations import describe_database, prepare_database
from proxy.ledger.retention import delete_old_rows
from proxy.ledger.store import LedgerStore
from proxy.ledger.writer import LedgerWriter
from proxy.metering import tokens
from proxy.metering.batches import BatchMetering, BatchRegistry
from proxy.metering.settle import Settler
from proxy.metering.traces import TraceTracker
from proxy.metrics import Metrics, MetricsSink
from proxy.pricing.catalog import PriceCatalog
from proxy.settings import Settings, load_settings
from proxy.sinks import Publisher, Sink
from proxy.upstream.client import AiohttpUpstreamClient
from proxy.upstream.routing import Router

logger = logging.getLogger(__name__)

# Each sweep observes every trace it finishes: frequent small sweeps, not a long pause now and then.
_LONGEST_TRACE_SWEEP_SECONDS = 1.0
_RETENTION_SECONDS = 3600.0
_GPU_HOURS_SECONDS = 60.0
_ACCESS_LOAD_WAIT_SECONDS = 5.0


class ProxyApp:
    """Sends `/v1/*` straight to the forwarding route, without passing through a router."""

    def __init__(self, openai_route: ASGIApp, rest: FastAPI) -> None:
        self._openai_route = openai_route
        self._rest = rest

    @property
    def routes(self) -> list[BaseRoute]:
        """Every route but `/v1/*`, as Starlette lists them: what checks of the whole app walk."""
        return self._rest.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/v1/") or path == "/v1":
                await self._openai_route(scope, receive, send)
                return
        await self._rest(scope, receive, send)


async def _finish_idle_traces(traces: TraceTracker, idle_seconds: float) -> None:
    interval = min(_LONGEST_TRACE_SWEEP_SECONDS, idle_seconds / 2)
    while True:
        await asyncio.sleep(interval)
        traces.finish_idle()


def _ledger_jobs(
    settings: Settings, engine: AsyncEngine, metrics: Metrics, clock: Clock
) -> list[Coroutine[Any, Any, None]]:
    """Retention, when configured, and the GPU-hour split, when an upstream is priced so."""
    jobs = []
    retention_days = settings.proxy.ledger.retention_days
    if retention_days is not None:

        async def delete_expired() -> None:
            await delete_old_rows(engine, retention_days, clock())

        jobs.append(run_every(_RETENTION_SECONDS, delete_expired, "retention"))
    hourly_costs = {
        upstream.config.name: upstream.config.hourly_cost_usd
        for upstream in settings.upstreams
        if upstream.config.hourly_cost_usd is not None
    }
    if hourly_costs:

        async def split_gpu_hours() -> None:
            changes = await price_gpu_hours(engine, hourly_costs, clock())
            metrics.add_gpu_hour_costs(changes)

        jobs.append(run_every(_GPU_HOURS_SECONDS, split_gpu_hours, "gpu-hours"))
    return jobs


async def _prepare_database(database_url: str) -> None:
    """Migrate SQLite, refuse an un-migrated Postgres; an unreachable one is waited for."""
    try:
        await prepare_database(database_url)
    except DATABASE_ERRORS as error:
        logger.warning(
            "the database %s is unreachable (%s): records stay journaled until it is back",
            describe_database(database_url),
            error,
        )


async def _load_access(
    engine: AsyncEngine, settings: Settings, directory: AccessDirectory, clock: Clock
) -> None:
    """Write what the config declares to the database, then read keys and budgets into memory;
    while the database is away, retry (proxy keys are refused until it is back)."""
    delay = 0.5
    while True:
        try:
            await apply_declared(engine, settings, clock())
            await directory.reload()
            return
        except DATABASE_ERRORS as error:
            logger.warning("cannot load teams, keys and budgets yet, retrying: %s", error)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def _report_crash(task: asyncio.Task[Any]) -> None:
    """A background task must never end while the app runs: say so loudly if one does."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task %s crashed", task.get_name(), exc_info=task.exception())


def create_app(
    settings: Settings, extra_sinks: Sequence[Sink] = (), clock: Clock = utc_now
) -> ProxyApp:
    """Wire upstreams, metering, sinks and routes; the lifespan owns the client and tasks."""
    client = AiohttpUpstreamClient(
        settings.proxy.timeouts, settings.proxy.max_connections_per_upstream
    )
    metrics = Metrics(CollectorRegistry(), settings.environment.metrics_multiprocess_dir)
    trace_limits = settings.proxy.trace_limits
    traces = TraceTracker(
        settings.proxy.trace_idle_seconds,
        on_finished=metrics.observe_trace,
        count_costs=trace_limits.max_cost_usd is not None,
    )
    database_url = settings.environment.database_url
    ledger_config = settings.proxy.ledger
    engine = create_ledger_engine(database_url, ledger_config.statement_timeout_seconds)
    directory = AccessDirectory(engine, settings.proxy.access.poll_seconds)
    budget_config, alert_config = settings.proxy.budgets, settings.proxy.alerts
    lease_policy = LeasePolicy(
        ttl_seconds=budget_config.lease_ttl_seconds,
        slice_share=budget_config.lease_slice_share,
        idle_seconds=budget_config.lease_idle_seconds,
    )
    guard = BudgetGuard(BudgetStore(engine), new_request_id(), lease_policy)
    alert_store = AlertStore(engine)
    dispatcher = AlertDispatcher(
        alert_store,
        metrics.budgets.deliveries,
        clock,
        max_attempts=alert_config.delivery_max_attempts,
    )
    evaluator = AlertEvaluator(
        engine,
        directory,
        alert_store,
        metrics.budgets,
        clock,
        timedelta(hours=alert_config.forecast_window_hours),
        on_recorded=dispatcher.wake,
    )

    def stored(request_ids: list[str]) -> None:
        guard.landed(request_ids)
        evaluator.nudge()

    ledger = LedgerWriter(
        LedgerStore(engine),
        ledger_config.journal_dir,
        metrics.ledger,
        batch_size=ledger_config.batch_size,
        flush_seconds=ledger_config.flush_seconds,
        fsync_seconds=ledger_config.fsync_seconds,
        on_stored=stored,
    )
    sinks: list[Sink] = [MetricsSink(metrics), traces, ledger, *extra_sinks]
    catalog = PriceCatalog(settings.proxy.prices)
    settler = Settler(catalog, Publisher(sinks, metrics.sink_errors), clock)
    admission = Admission(
        guard,
        catalog,
        TraceLimiter(traces, trace_limits.max_calls, trace_limits.max_cost_usd)
        if trace_limits.max_calls is not None or trace_limits.max_cost_usd is not None
        else None,
        budget_config.output_allowance_tokens,
        clock,
    )

    reports = ReportRunner(settings.proxy.reports, WorkerConfig.of(settings))

    async def renew_leases() -> None:
        await guard.renew(clock())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _prepare_database(database_url)
        # tiktoken's encodings load once, here, not on the first call that needs them.
        await asyncio.to_thread(tokens.warm_up)
        await client.start()
        ledger.start()
        loading = asyncio.create_task(_load_access(engine, settings, directory, clock))
        # Serve with keys and budgets loaded, unless the database makes that wait.
        await asyncio.wait([loading], timeout=_ACCESS_LOAD_WAIT_SECONDS)
        background = [
            loading,
            asyncio.create_task(_finish_idle_traces(traces, settings.proxy.trace_idle_seconds)),
            *(asyncio.create_task(job) for job in _ledger_jobs(settings, engine, metrics, clock)),
            asyncio.create_task(directory.poll()),
            asyncio.create_task(
                run_every(lease_policy.renew_seconds, renew_leases, "budget-leases")
            ),
            asyncio.create_task(evaluator.run(alert_config.check_seconds)),
            asyncio.create_task(dispatcher.run()),
        ]
        for task in background:
            task.add_done_callback(_report_crash)
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            traces.finish_idle(now=float("inf"))
            await reports.stop()
            await client.aclose()
            await dispatcher.aclose()
            await ledger.stop(ledger_config.drain_seconds)
            with contextlib.suppress(*DATABASE_ERRORS):
                await guard.release_all(clock())
            await engine.dispose()
            metrics.forget_this_process()

    rest = FastAPI(
        title="llm-metering-proxy",
        lifespan=lifespan,
        exception_handlers={HTTPException: framework_refusal, Exception: unexpected_error},
    )
    rest.state.metrics = metrics
    rest.state.ledger = ledger
    rest.state.ledger_engine = engine
    rest.state.admin_key = settings.environment.admin_key
    rest.state.access = directory
    rest.state.clock = clock
    rest.state.reports = reports
    rest.include_router(ops.router)
    rest.include_router(usage.router)
    rest.include_router(admin.router)
    route = OpenAIRoute(
        Router.from_settings(settings),
        client,
        settings.proxy.max_body_bytes,
        settings.proxy.server.whole_body_timeout_seconds,
        traces,
        settler,
        BatchMetering(BatchRegistry(), settler.settle_batch_line),
        directory,
        admission,
        settings.proxy.access.require_proxy_key,
        clock,
    )
    return ProxyApp(route, rest)


def create_app_from_environment() -> ProxyApp:
    """The factory `serve` hands to uvicorn, so each worker process builds its own app."""
    app = create_app(load_settings())
    # What exists now (modules, the price data, the app) lives as long as the process. A full
    # collection walking it took 40 ms here, a pause in some call every few seconds under load;
    # frozen, the collector walks only what calls create.
    gc.collect()
    gc.freeze()
    return app
