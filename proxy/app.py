"""The ASGI application: `/v1/*` goes to the forwarding route, everything else to FastAPI."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from proxy.api import ops
from proxy.api.openai import OpenAIRoute
from proxy.asgi import ASGIApp, Receive, Scope, Send
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


def create_app(settings: Settings, extra_sinks: Sequence[Sink] = ()) -> ProxyApp:
    """Wire upstreams, metering, sinks and routes; the lifespan owns the client and tasks."""
    client = AiohttpUpstreamClient(
        settings.proxy.timeouts, settings.proxy.max_connections_per_upstream
    )
    metrics = Metrics(CollectorRegistry())
    traces = TraceTracker(settings.proxy.trace_idle_seconds, on_finished=metrics.observe_trace)
    publisher = Publisher([MetricsSink(metrics), traces, *extra_sinks], metrics.sink_errors)
    settler = Settler(PriceCatalog(settings.proxy.prices), publisher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # tiktoken's encodings load once, here, not on the first call that needs them.
        await asyncio.to_thread(tokens.warm_up)
        await client.start()
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

    rest = FastAPI(title="llm-metering-proxy", lifespan=lifespan)
    rest.state.metrics = metrics
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
