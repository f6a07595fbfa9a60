"""The `/v1/*` route: a raw ASGI app, so the hot path carries no framework layer it does not need.

It reads what routing needs, picks the upstream, and hands the call to `relay`; when the client
hangs up at any point after its body arrived, the call is cancelled, and so is the upstream's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import unquote

from proxy.asgi import (
    ClientChannel,
    ClientDisconnected,
    RawHeaders,
    Receive,
    Scope,
    Send,
    content_length,
    header_value,
    send_error,
)
from proxy.callers import Caller, identify_caller
from proxy.endpoints import Endpoint, model_routed_endpoint
from proxy.errors import ModelNotServed, ProxyError
from proxy.ids import new_request_id
from proxy.request_fields import read_request_fields
from proxy.upstream.client import StreamedBody, UpstreamClient, UpstreamRequest
from proxy.upstream.forward import relay
from proxy.upstream.models_list import list_models_of_all_upstreams
from proxy.upstream.routing import Router, Upstream

logger = logging.getLogger(__name__)

_PREFIX_LENGTH = len(b"/v1/")


@dataclass(frozen=True, slots=True)
class _Target:
    upstream: Upstream
    endpoint: Endpoint | None
    model: str | None


class OpenAIRoute:
    """Forwards every `/v1/*` call to its upstream and relays the answer untouched."""

    def __init__(self, router: Router, client: UpstreamClient, max_body_bytes: int) -> None:
        self._router = router
        self._client = client
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id().encode()
        id_header = [(b"x-metering-request-id", request_id)]
        channel = ClientChannel(receive)
        caller = identify_caller(scope["headers"])
        try:
            if self._lists_all_models(scope):
                await self._send_model_list(scope, caller, send, id_header)
                return
            upstream_request = await self._upstream_request(scope, caller, channel)
            await self._relay_until_disconnect(upstream_request, channel, send, request_id)
        except ProxyError as error:
            await send_error(send, error, id_header)
        except ClientDisconnected:
            return

    def _lists_all_models(self, scope: Scope) -> bool:
        return (
            len(self._router.upstreams) > 1
            and scope["method"] == "GET"
            and scope["raw_path"].rstrip(b"/") == b"/v1/models"
        )

    async def _send_model_list(
        self, scope: Scope, caller: Caller, send: Send, id_header: RawHeaders
    ) -> None:
        answer = await list_models_of_all_upstreams(
            self._router, self._client, scope["headers"], caller.passthrough_credential
        )
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(b"content-type", b"application/json"), *id_header],
            }
        )
        await send({"type": "http.response.body", "body": answer.body, "more_body": False})

    async def _upstream_request(
        self, scope: Scope, caller: Caller, channel: ClientChannel
    ) -> UpstreamRequest:
        method: str = scope["method"]
        headers: RawHeaders = scope["headers"]
        # The raw path keeps the client's percent-encoding, which the upstream must see unchanged.
        path = scope["raw_path"][_PREFIX_LENGTH:].decode("latin-1")
        endpoint = model_routed_endpoint(method, path)
        body: bytes | StreamedBody
        if endpoint is not None:
            body = await channel.read_body(self._max_body_bytes, content_length(headers))
            fields = read_request_fields(endpoint, header_value(headers, b"content-type"), body)
            target = self._target(endpoint, fields.model)
        else:
            body = await self._pass_through_body(channel, headers)
            target = self._target(None, _model_in_path(method, path))
        return target.upstream.request(
            method=method,
            path=path,
            query=scope["query_string"].decode("latin-1"),
            endpoint=target.endpoint,
            model=target.model,
            client_headers=headers,
            client_credential=caller.passthrough_credential,
            body=body,
        )

    async def _pass_through_body(
        self, channel: ClientChannel, headers: RawHeaders
    ) -> bytes | StreamedBody:
        """Small bodies are read whole; large or unsized ones (file uploads) stream through."""
        declared = content_length(headers)
        unsized = declared is None and header_value(headers, b"transfer-encoding") != b""
        if unsized or (declared is not None and declared > self._max_body_bytes):
            return StreamedBody(channel.stream_body(), declared)
        return await channel.read_body(self._max_body_bytes, declared)

    def _target(self, endpoint: Endpoint | None, model: str | None) -> _Target:
        if model is None:
            return _Target(self._router.default, endpoint, None)
        upstream = self._router.for_model(model)
        if upstream is None:
            raise ModelNotServed(model)
        return _Target(upstream, endpoint, model)

    async def _relay_until_disconnect(
        self, request: UpstreamRequest, channel: ClientChannel, send: Send, request_id: bytes
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        relaying = True

        def cancel_on_hang_up(watcher: asyncio.Task[None]) -> None:
            if relaying and not watcher.cancelled() and channel.disconnected:
                task.cancel()

        watcher = asyncio.create_task(channel.wait_for_disconnect())
        watcher.add_done_callback(cancel_on_hang_up)
        try:
            await relay(self._client, request, send, request_id)
        except asyncio.CancelledError:
            if not channel.disconnected:
                raise
            task.uncancel()
        finally:
            relaying = False
            watcher.cancel()


def _model_in_path(method: str, path: str) -> str | None:
    """`GET` or `DELETE /v1/models/{model}` goes to the upstream that serves that model."""
    if method in ("GET", "DELETE") and path.startswith("models/") and len(path) > len("models/"):
        return unquote(path[len("models/") :])
    return None
