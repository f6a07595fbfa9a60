"""Relay one upstream answer to the client: status, headers and each chunk as it arrives."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.asgi import Send
from proxy.errors import ProxyError, UpstreamUnreachable
from proxy.metering.exchange import Exchange
from proxy.upstream.client import UpstreamClient, UpstreamRequest, UpstreamResponse
from proxy.upstream.headers import headers_for_client
from proxy.upstream.routing import Upstream

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One upstream to try, with the call addressed to it."""

    upstream: Upstream
    request: UpstreamRequest


def _turned_away(status: int) -> bool:
    """An answer that did nothing billable, which another upstream may do better."""
    return status == 429 or status >= 500


async def relay(
    client: UpstreamClient, attempts: Sequence[Attempt], send: Send, exchange: Exchange
) -> None:
    """Send the call upstream and stream its answer back unbuffered, through the exchange's tap.

    The attempts are tried in order while one is unreachable or answers 429 or 5xx: nothing has
    reached the client yet, so another upstream can still answer. A timeout is not tried again
    (the upstream may have done the work). A `ProxyError` of the last attempt before its answer
    starts propagates, for the caller to answer with. Once the answer has started the status is
    gone, so a failure mid-body cuts the client's connection, as the upstream's own would have.
    """
    response, upstream = await _first_answer(client, attempts, exchange)
    exchange.status = str(response.status)
    tap = exchange.tap
    headers = response.headers if tap is None else tap.start(response.status, response.headers)
    complete = False
    try:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": headers_for_client(headers, exchange.request_id.encode()),
            }
        )
        async for chunk in response.iter_raw():
            relayed = chunk if tap is None else tap.feed(chunk)
            if relayed:
                await send({"type": "http.response.body", "body": relayed, "more_body": True})
        last = b"" if tap is None else tap.finish()
        await send({"type": "http.response.body", "body": last, "more_body": False})
        complete = True
    except ProxyError as error:
        exchange.status = str(error.status)
        logger.warning("upstream %r failed mid-answer: %s", upstream.name, error.message)
    finally:
        if complete:
            response.release()
        else:
            response.abort()


async def _first_answer(
    client: UpstreamClient, attempts: Sequence[Attempt], exchange: Exchange
) -> tuple[UpstreamResponse, Upstream]:
    """The answer to relay and the upstream that gave it (see `relay`); the exchange names the
    upstream tried last, so that a call no upstream answered is recorded against that one."""
    *earlier, last = attempts
    for attempt in earlier:
        exchange.upstream = attempt.upstream
        try:
            response = await client.send(attempt.request)
        except UpstreamUnreachable as error:
            logger.warning("falling back from upstream %r: %s", attempt.upstream.name, error)
            continue
        if not _turned_away(response.status):
            return response, attempt.upstream
        response.abort()
        logger.warning(
            "falling back from upstream %r: it answered %d", attempt.upstream.name, response.status
        )
    exchange.upstream = last.upstream
    return await client.send(last.request), last.upstream
