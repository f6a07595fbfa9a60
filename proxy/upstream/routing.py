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
        self.default = next(u for u in self.upstreams if u.name == default_name)
        # Model names repeat endlessly; match each distinct one once.
        self.for_model = lru_cache(maxsize=4096)(self._first_serving)

    def _first_serving(self, model: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.serves(model)), None)

    @classmethod
    def from_settings(cls, settings: Settings) -> Router:
        upstreams = [Upstream.from_settings(resolved) for resolved in settings.upstreams]
        return cls(upstreams, settings.default_upstream_name)
