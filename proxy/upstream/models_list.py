"""`GET /v1/models` across several upstreams: the union of the models each one would be sent."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import ProxyError, UpstreamFailed
from proxy.upstream.client import UpstreamClient
from proxy.upstream.routing import RawHeaders, Router, Upstream

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelList:
    status: int
    body: bytes


async def _fetch(
    client: UpstreamClient,
    upstream: Upstream,
    client_headers: RawHeaders,
    credential: str | None,
) -> tuple[int, bytes]:
    # The answer is parsed here, so ask for it unencoded.
    headers = [(name, value) for name, value in client_headers if name != b"accept-encoding"]
    request = upstream.request(
        method="GET",
        path="models",
        query="",
        endpoint=None,
        model=None,
        client_headers=headers,
        client_credential=credential,
        body=b"",
    )
    response = await client.send(request)
    try:
        body = b"".join([chunk async for chunk in response.iter_raw()])
    except BaseException:
        response.abort()
        raise
    response.release()
    return response.status, body


def _served_models(router: Router, upstream: Upstream, body: bytes) -> list[dict[str, Any]]:
    """The listed models that this upstream would actually be sent (the router's first match)."""
    try:
        listed = orjson.loads(body)["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise UpstreamFailed(
            f"The upstream {upstream.name!r} sent an unreadable model list."
        ) from error
    return [
        entry
        for entry in listed
        if isinstance(entry, dict)
        and isinstance(entry.get("id"), str)
        and router.for_model(entry["id"]) is upstream
    ]


async def list_models_of_all_upstreams(
    router: Router, client: UpstreamClient, client_headers: RawHeaders, credential: str | None
) -> ModelList:
    """Each upstream's list, filtered by routing; an upstream that fails is left out and logged."""
    results = await asyncio.gather(
        *(_fetch(client, upstream, client_headers, credential) for upstream in router.upstreams),
        return_exceptions=True,
    )
    models: list[dict[str, Any]] = []
    answered = False
    for upstream, result in zip(router.upstreams, results, strict=True):
        if isinstance(result, BaseException):
            logger.warning("listing models of upstream %r failed: %s", upstream.name, result)
            continue
        status, body = result
        if status != 200:
            logger.warning("listing models of upstream %r answered %d", upstream.name, status)
            continue
        try:
            models.extend(_served_models(router, upstream, body))
        except ProxyError as error:
            logger.warning("%s", error.message)
            continue
        answered = True
    if answered:
        return ModelList(200, orjson.dumps({"object": "list", "data": models}))
    # No upstream could list: answer as the default upstream did (its error, e.g. a 401).
    default_result = results[router.upstreams.index(router.default)]
    if isinstance(default_result, ProxyError):
        raise default_result
    if isinstance(default_result, BaseException):
        raise UpstreamFailed("No upstream could list its models.") from default_result
    return ModelList(*default_result)
