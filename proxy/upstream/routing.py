"""Upstreams and the router that picks one for a model by the config's glob patterns, in order."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from proxy.endpoints import Endpoint
from proxy.settings import ResolvedUpstream, Settings, UpstreamConfig
from proxy.upstream.client import StreamedBody, UpstreamRequest
from proxy.upstream.dialects import DIALECTS, CallAddress, Dialect
from proxy.upstream.headers import headers_for_upstream

RawHeaders = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Upstream:
    config: UpstreamConfig
    dialect: Dialect
    # Managed mode when set: this key goes upstream and the client's own key never does.
    api_key: str | None
    model_pattern: re.Pattern[str]

    @classmethod
    def from_settings(cls, resolved: ResolvedUpstream) -> Upstream:
        translated = "|".join(fnmatch.translate(pattern) for pattern in resolved.config.models)
        return cls(
            config=resolved.config,
            dialect=DIALECTS[resolved.config.kind],
            api_key=resolved.api_key.get_secret_value() if resolved.api_key else None,
            model_pattern=re.compile(translated),
        )

    @property
    def name(self) -> str:
        return self.config.name

    def serves(self, model: str) -> bool:
        return self.model_pattern.match(model) is not None

    def request(
        self,
        *,
        method: str,
        path: str,
        query: str,
        endpoint: Endpoint | None,
        model: str | None,
        client_headers: RawHeaders,
        client_credential: str | None,
        body: bytes | StreamedBody,
    ) -> UpstreamRequest:
        """The call to send upstream for the client's `/v1/{path}` call."""
        headers = headers_for_upstream(client_headers)
        credential = self.api_key or client_credential
        if credential:
            headers.extend(self.dialect.auth_headers(credential))
        return UpstreamRequest(
            upstream=self.name,
            method=method,
            url=self.dialect.url(self.config, CallAddress(path, query, endpoint, model)),
            headers=headers,
            body=body,
        )


class Router:
    """Model name -> upstream: the first upstream whose patterns match, else none."""

    def __init__(self, upstreams: Sequence[Upstream], default_name: str) -> None:
        self.upstreams = tuple(upstreams)
        by_name = {u.name: u for u in self.upstreams}
        self.default = by_name[default_name]
        self._attempts = {u.name: _fallback_chain(u, by_name) for u in self.upstreams}
        # Model names repeat endlessly; match each distinct one once.
        self.for_model = lru_cache(maxsize=4096)(self._first_serving)

    def _first_serving(self, model: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.serves(model)), None)

    def attempts(self, upstream: Upstream) -> tuple[Upstream, ...]:
        """`upstream`, then its fallback, the fallback's fallback, ...: the order to try them."""
        return self._attempts[upstream.name]

    @classmethod
    def from_settings(cls, settings: Settings) -> Router:
        upstreams = [Upstream.from_settings(resolved) for resolved in settings.upstreams]
        return cls(upstreams, settings.default_upstream_name)


def _fallback_chain(upstream: Upstream, by_name: dict[str, Upstream]) -> tuple[Upstream, ...]:
    chain = [upstream]
    # The settings refuse names that are not upstreams and chains that come back on themselves.
    while (fallback := chain[-1].config.fallback) is not None:
        chain.append(by_name[fallback])
    return tuple(chain)
