"""How each kind of upstream wants a call addressed and authenticated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from proxy.endpoints import Endpoint
from proxy.settings import UpstreamConfig, UpstreamKind
from proxy.upstream.paths import model_as_segment


@dataclass(frozen=True, slots=True)
class CallAddress:
    """What the client called: `/v1/{path}?{query}`, both still URL-encoded."""

    path: str
    query: str
    endpoint: Endpoint | None
    model: str | None


class Dialect(Protocol):
    def url(self, config: UpstreamConfig, call: CallAddress) -> str:
        """The upstream URL for the client's call."""
        ...

    def auth_headers(self, credential: str) -> list[tuple[str, str]]: ...


def _join(base: str, path: str, query: str) -> str:
    return f"{base}/{path}?{query}" if query else f"{base}/{path}"


class OpenAIDialect:
    """OpenAI itself and every server that speaks its API (vLLM, llama.cpp server, Ollama)."""

    def url(self, config: UpstreamConfig, call: CallAddress) -> str:
        return _join(config.base_url, call.path, call.query)

    def auth_headers(self, credential: str) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {credential}")]


class AzureDialect:
    """Azure OpenAI: `base_url` is `https://RESOURCE.openai.azure.com/openai`."""

    def url(self, config: UpstreamConfig, call: CallAddress) -> str:
        path, query, endpoint, model = call.path, call.query, call.endpoint, call.model
        if "api-version=" not in query:
            version = f"api-version={quote(config.api_version, safe='')}"
            query = f"{query}&{version}" if query else version
        if endpoint is not None and endpoint.deployment_scoped and model is not None:
            configured = config.deployments.get(model)
            # A deployment named after the client's model must not become a path of its own.
            deployment = (
                model_as_segment(model) if configured is None else quote(configured, safe="")
            )
            path = f"deployments/{deployment}/{path}"
        return _join(config.base_url, path, query)

    def auth_headers(self, credential: str) -> list[tuple[str, str]]:
        return [("api-key", credential)]


DIALECTS: dict[UpstreamKind, Dialect] = {
    "openai": OpenAIDialect(),
    "openai-compatible": OpenAIDialect(),
    "azure": AzureDialect(),
}
