"""The `/v1/*` route: a raw ASGI app, so the hot path carries no framework layer it does not need.

It reads what routing and metering need, picks the upstream, relays the answer through a tap,
and settles exactly one usage record per call, whatever happens. When the client hangs up at any
point after its body arrived, the call is cancelled, and so is the upstream's.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import unquote

from proxy.access.directory import AccessDirectory, AccessSnapshot
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
from proxy.budgets.admission import Admission
from proxy.callers import identify_caller
from proxy.clock import Clock
from proxy.endpoints import family_of, model_routed_endpoint
from proxy.errors import ModelNotServed, ProxyError
from proxy.metering.attribution import attribute
from proxy.metering.batches import BatchMetering
from proxy.metering.exchange import Exchange
from proxy.metering.request_changes import body_asking_for_stream_usage, readable_accept_encoding
from proxy.metering.settle import Settler
from proxy.metering.tap import ResponseTap
from proxy.metering.traces import TraceTracker
from proxy.request_fields import RequestFields, read_request_fields
from proxy.upstream.client import StreamedBody, UpstreamClient
from proxy.upstream.forward import Attempt, relay
from proxy.upstream.models_list import list_models_of_all_upstreams
from proxy.upstream.paths import judge_path
from proxy.upstream.routing import Router, Upstream

_NO_FIELDS = RequestFields(model=None, stream=False)


class OpenAIRoute:
    """Forwards every `/v1/*` call to its upstream and relays the answer untouched."""

    def __init__(
        self,
        router: Router,
        client: UpstreamClient,
        max_body_bytes: int,
        whole_body_seconds: float,
        traces: TraceTracker,
        settler: Settler,
        batches: BatchMetering,
        access: AccessDirectory,
        admission: Admission,
        require_proxy_key: bool,
        clock: Clock,
    ) -> None:
        self._router = router
        self._client = client
        self._max_body_bytes = max_body_bytes
        self._whole_body_seconds = whole_body_seconds
        self._traces = traces
        self._settler = settler
        self._batches = batches
        self._access = access
        self._admission = admission
        self._require_proxy_key = require_proxy_key
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(created_at=self._clock())
        id_header = [(b"x-metering-request-id", exchange.request_id.encode())]
        channel = ClientChannel(scope, receive)
        access = self._access.snapshot
        try:
            exchange.caller = identify_caller(
                scope["headers"], access, self._clock(), self._require_proxy_key
            )
            # Before anything is decided on the path, or admitted: see proxy/upstream/paths.py.
            path = judge_path(scope["raw_path"])
            if self._lists_all_models(scope["method"], path):
                await self._send_model_list(scope, exchange, send, id_header)
                return
            attempts = await self._attempts(scope, path, exchange, channel, access)
            exchange.forwarded_at = time.perf_counter()
            await self._relay_until_disconnect(attempts, exchange, channel, send)
        except ProxyError as error:
            exchange.status = str(error.status)
            await send_error(send, error, [*id_header, *error.headers()])
        except ClientDisconnected:
            exchange.client_closed()
        finally:
            self._batches.note_answer(exchange)
            self._admission.settle(exchange, self._settler.settle(exchange))

    def _lists_all_models(self, method: str, path: str) -> bool:
        return len(self._router.upstreams) > 1 and method == "GET" and path.rstrip("/") == "models"

    async def _send_model_list(
        self, scope: Scope, exchange: Exchange, send: Send, id_header: RawHeaders
    ) -> None:
        exchange.family = "models"
        answer = await list_models_of_all_upstreams(
            self._router, self._client, scope["headers"], exchange.caller.passthrough_credential
        )
        exchange.status = str(answer.status)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(b"content-type", b"application/json"), *id_header],
            }
        )
        await send({"type": "http.response.body", "body": answer.body, "more_body": False})

    async def _attempts(
        self,
        scope: Scope,
        path: str,
        exchange: Exchange,
        channel: ClientChannel,
        access: AccessSnapshot,
    ) -> list[Attempt]:
        """The call to `/v1/{path}` (as the client encoded it) addressed to its upstream and, for
        a model-routed call, to its fallbacks."""
        method: str = scope["method"]
        headers: RawHeaders = scope["headers"]
        endpoint = model_routed_endpoint(method, path)
        exchange.path = path
        exchange.family = family_of(endpoint, path)
        body: bytes | StreamedBody
        fields = _NO_FIELDS
        if endpoint is not None:
            read = await channel.read_body(
                self._max_body_bytes, content_length(headers), self._whole_body_seconds
            )
            fields = read_request_fields(endpoint, header_value(headers, b"content-type"), read)
            model = fields.model
            body, headers = self._metered(exchange, fields, read, headers)
        else:
            body = await self._pass_through_body(channel, headers)
            model = _model_in_path(method, path)
        exchange.request = fields.document
        exchange.attribution = attribute(headers, fields.document)
        exchange.trace_id, exchange.parent_id = self._traces.resolve(
            exchange.caller.team, exchange.request_id, exchange.attribution
        )
        upstream = self._upstream_for(model)
        exchange.upstream = upstream
        exchange.model = model or ""
        if endpoint is None:
            exchange.tap = self._batches.tap_for(method, path, upstream)
            if exchange.tap is not None:
                headers = readable_accept_encoding(headers, identity_only=False)
        # Only a model-routed call can go elsewhere: its body is in hand, and it leaves nothing
        # (a file, a batch) behind at the upstream that the client's next call would look for.
        candidates = self._router.attempts(upstream) if endpoint is not None else (upstream,)
        # Addressed before admission: an upstream may refuse to address the call (a model name
        # that is no path segment).
        attempts = [
            Attempt(
                candidate,
                candidate.request(
                    method=method,
                    path=path,
                    query=scope["query_string"].decode("latin-1"),
                    endpoint=endpoint,
                    model=model,
                    client_headers=headers,
                    client_credential=exchange.caller.passthrough_credential,
                    body=body,
                ),
            )
            for candidate in candidates
        ]
        await self._admission.admit(exchange, access)
        return attempts

    def _metered(
        self, exchange: Exchange, fields: RequestFields, body: bytes, headers: RawHeaders
    ) -> tuple[bytes, RawHeaders]:
        """Set up the tap, and make the request changes metering needs (see request_changes)."""
        changed_body = body_asking_for_stream_usage(exchange.family, fields)
        exchange.tap = ResponseTap(strip_added_usage=changed_body is not None)
        headers = readable_accept_encoding(headers, identity_only=changed_body is not None)
        return (body if changed_body is None else changed_body), headers

    async def _pass_through_body(
        self, channel: ClientChannel, headers: RawHeaders
    ) -> bytes | StreamedBody:
        """Small bodies are read whole; large or unsized ones (file uploads) stream through."""
        declared = content_length(headers)
        unsized = declared is None and header_value(headers, b"transfer-encoding") != b""
        if unsized or (declared is not None and declared > self._max_body_bytes):
            return StreamedBody(channel.stream_body(), declared)
        return await channel.read_body(self._max_body_bytes, declared, self._whole_body_seconds)

    def _upstream_for(self, model: str | None) -> Upstream:
        if model is None:
            return self._router.default
        upstream = self._router.for_model(model)
        if upstream is None:
            raise ModelNotServed(model)
        return upstream

    async def _relay_until_disconnect(
        self, attempts: list[Attempt], exchange: Exchange, channel: ClientChannel, send: Send
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
            await relay(self._client, attempts, send, exchange)
        except asyncio.CancelledError:
            if not channel.disconnected:
                # The server cancels the calls still running when its shutdown grace period
                # ends: the client's answer stops short, and the record must not say otherwise.
                exchange.interrupted()
                raise
            task.uncancel()
            exchange.client_closed()
        finally:
            relaying = False
            watcher.cancel()


def _model_in_path(method: str, path: str) -> str | None:
    """`GET` or `DELETE /v1/models/{model}` goes to the upstream that serves that model."""
    if method in ("GET", "DELETE") and path.startswith("models/") and len(path) > len("models/"):
        return unquote(path[len("models/") :])
    return None
