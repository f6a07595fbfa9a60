"""The ASGI application: `/v1/*` goes to the forwarding route, everything else to FastAPI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from proxy.api import ops
from proxy.api.openai import OpenAIRoute
from proxy.asgi import ASGIApp, Receive, Scope, Send
from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import describe_database, prepare_database
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

_LONGEST_TRACE_SWEEP_SECONDS = 5.0


class ProxyApp:
    """Sends `/v1/*` straight to the forwarding route, without passing through a router."""

    def __init__(self, openai_route: ASGIApp, rest: ASGIApp) -> None:
        self._openai_route = openai_route
        self._rest = rest

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


async def _prepare_database(database_url: str) -> None:
    """Migrate SQLite, refuse an un-migrated Postgres; an unreachable one is waited for."""
    try:
        await prepare_database(database_url)
    except (OSError, SQLAlchemyError) as error:
        logger.warning(
            "the database %s is unreachable (%s): records stay journaled until it is back",
            describe_database(database_url),
            error,
        )


def create_app(settings: Settings, extra_sinks: Sequence[Sink] = ()) -> ProxyApp:
    """Wire upstreams, metering, sinks and routes; the lifespan owns the client and tasks."""
    client = AiohttpUpstreamClient(
        settings.proxy.timeouts, settings.proxy.max_connections_per_upstream
    )
    metrics = Metrics(CollectorRegistry())
    traces = TraceTracker(settings.proxy.trace_idle_seconds, on_finished=metrics.observe_trace)
    database_url = settings.environment.database_url
    engine = create_ledger_engine(database_url)
    ledger_config = settings.proxy.ledger
    ledger = LedgerWriter(
        LedgerStore(engine),
        ledger_config.journal_dir,
        metrics.ledger,
        batch_size=ledger_config.batch_size,
        flush_seconds=ledger_config.flush_seconds,
        fsync_seconds=ledger_config.fsync_seconds,
    )
    sinks: list[Sink] = [MetricsSink(metrics), traces, ledger, *extra_sinks]
    settler = Settler(PriceCatalog(settings.proxy.prices), Publisher(sinks, metrics.sink_errors))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _prepare_database(database_url)
        # tiktoken's encodings load once, here, not on the first call that needs them.
        await asyncio.to_thread(tokens.warm_up)
        await client.start()
        ledger.start()
        sweeper = asyncio.create_task(
            _finish_idle_traces(traces, settings.proxy.trace_idle_seconds)
        )
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            traces.finish_idle(now=float("inf"))
            await client.aclose()
            await ledger.stop(ledger_config.drain_seconds)
            await engine.dispose()

    rest = FastAPI(title="llm-metering-proxy", lifespan=lifespan)
    rest.state.metrics = metrics
    rest.state.ledger = ledger
    rest.include_router(ops.router)
    route = OpenAIRoute(
        Router.from_settings(settings),
        client,
        settings.proxy.max_body_bytes,
        traces,
        settler,
        BatchMetering(BatchRegistry(), settler.settle_batch_line),
    )
    return ProxyApp(route, rest)


def create_app_from_environment() -> ProxyApp:
    """The factory `serve` hands to uvicorn, so each worker process builds its own app."""
    return create_app(load_settings())
