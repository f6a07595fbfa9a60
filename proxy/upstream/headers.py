"""Which headers cross the proxy, in each direction."""

from __future__ import annotations

from collections.abc import Iterable

RawHeaders = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1, plus the unofficial Proxy-Connection.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the proxy itself for the upstream: the host and length of the forwarded request, and the
# upstream's credential, which the upstream's dialect decides.
_SET_FOR_UPSTREAM = frozenset({b"host", b"content-length", b"authorization", b"api-key"})
_PROXY_OWN_PREFIX = b"x-metering-"
# Some frameworks (Symfony, IIS, method-override middleware) take a call's method or path from
# these: the proxy meters the method and path it sees, so they stop here.
_ROUTING_OVERRIDES = frozenset(
    {
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-original-url",
        b"x-rewrite-url",
    }
)
_NOT_FOR_UPSTREAM = _HOP_BY_HOP | _SET_FOR_UPSTREAM | _ROUTING_OVERRIDES


def _connection_listed(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Headers named in `Connection` are hop-by-hop too."""
    listed: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(token.strip().lower() for token in value.split(b","))
    return frozenset(listed)


def headers_for_upstream(client_headers: RawHeaders) -> list[tuple[str, str]]:
    """The client's headers that go on to the upstream (OpenAI-Organization, User-Agent, ...)."""
    dropped = _NOT_FOR_UPSTREAM | _connection_listed(client_headers)
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in client_headers
        if name not in dropped and not name.startswith(_PROXY_OWN_PREFIX)
    ]


def headers_for_client(upstream_headers: RawHeaders, request_id: bytes) -> RawHeaders:
    """The upstream's headers that reach the client, plus the proxy's `x-metering-request-id`."""
    dropped = _HOP_BY_HOP | _connection_listed(upstream_headers)
    relayed = [
        (lowered, value)
        for name, value in upstream_headers
        if (lowered := name.lower()) not in dropped
    ]
    relayed.append((b"x-metering-request-id", request_id))
    return relayed


def client_credential(client_headers: RawHeaders) -> str | None:
    """The key the client presented, as `Authorization: Bearer KEY` or Azure's `api-key: KEY`."""
    for name, value in client_headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None
