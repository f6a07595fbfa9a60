"""Relay one upstream answer to the client: status, headers and each chunk as it arrives."""

from __future__ import annotations

import logging

from proxy.asgi import Send
from proxy.errors import ProxyError
from proxy.upstream.client import UpstreamClient, UpstreamRequest
from proxy.upstream.headers import headers_for_client

logger = logging.getLogger(__name__)


async def relay(
    client: UpstreamClient, request: UpstreamRequest, send: Send, request_id: bytes
) -> None:
    """Send `request` upstream and stream its answer back unbuffered.

    A `ProxyError` before the answer starts propagates, for the caller to answer with. Once the
    answer has started the status is gone, so a failure mid-body cuts the client's connection, as
    the upstream's own failure would have.
    """
    response = await client.send(request)
    complete = False
    try:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": headers_for_client(response.headers, request_id),
            }
        )
        async for chunk in response.iter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        complete = True
    except ProxyError as error:
        logger.warning("upstream %r failed mid-answer: %s", request.upstream, error.message)
    finally:
        if complete:
            response.release()
        else:
            response.abort()
