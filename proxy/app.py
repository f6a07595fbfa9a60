"""The ASGI application: `/v1/*` goes to the forwarding route, everything else to FastAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from proxy.api import ops
from proxy.api.openai import OpenAIRoute
from proxy.asgi import ASGIApp, Receive, Scope, Send
from proxy.settings import Settings, load_settings
from proxy.upstream.client import AiohttpUpstreamClient
from proxy.upstream.routing import Router


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


def create_app(settings: Settings) -> ProxyApp:
    """Wire upstreams, the shared client and the routes; the lifespan owns the client."""
    client = AiohttpUpstreamClient(
        settings.proxy.timeouts, settings.proxy.max_connections_per_upstream
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await client.start()
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await client.aclose()

    rest = FastAPI(title="llm-metering-proxy", lifespan=lifespan)
    rest.include_router(ops.router)
    route = OpenAIRoute(Router.from_settings(settings), client, settings.proxy.max_body_bytes)
    return ProxyApp(route, rest)


def create_app_from_environment() -> ProxyApp:
    """The factory `serve` hands to uvicorn, so each worker process builds its own app."""
    return create_app(load_settings())
