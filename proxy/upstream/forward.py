"""Relay one upstream answer to the client: status, headers and each chunk as it arrives."""

from __future__ import annotations

import logging

from proxy.asgi import Send
from proxy.errors import ProxyError
from proxy.metering.exchange import Exchange
from proxy.upstream.client import UpstreamClient, UpstreamRequest
from proxy.upstream.headers import headers_for_client

logger = logging.getLogger(__name__)


async def relay(
    client: UpstreamClient, request: UpstreamRequest, send: Send, exchange: Exchange
) -> None:
    """Send `request` upstream and stream its answer back unbuffered, through the exchange's tap.

    A `ProxyError` before the answer starts propagates, for the caller to answer with. Once the
    answer has started the status is gone, so a failure mid-body cuts the client's connection, as
    the upstream's own failure would have.
    """
    response = await client.send(request)
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
        logger.warning("upstream %r failed mid-answer: %s", request.upstream, error.message)
    finally:
        if complete:
            response.release()
        else:
            response.abort()
