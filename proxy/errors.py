"""Errors the proxy answers itself, always in OpenAI's error shape."""

from __future__ import annotations

import orjson


class ProxyError(Exception):
    """An error answered by the proxy: `{"error": {"message", "type", "param", "code"}}`."""

    status: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Headers the answer carries besides the content type."""
        return []

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.error_type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )


class Refused(ProxyError):
    """A refusal that retrying cannot change: told to the OpenAI SDKs, which honour
    `x-should-retry`, so that they do not retry it as they would any other 429."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"x-should-retry", b"false")]


class InvalidRequest(ProxyError):
    status = 400
    error_type = "invalid_request_error"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"

    def __init__(self) -> None:
        super().__init__(
            "We could not parse the JSON body of your request. The proxy expects a JSON object."
        )


class MissingParameter(InvalidRequest):
    code = "missing_required_parameter"

    def __init__(self, param: str) -> None:
        super().__init__(f"Missing required parameter: `{param}`.", param=param)


class InvalidValue(InvalidRequest):
    code = "invalid_value"


class InvalidPath(InvalidRequest):
    code = "invalid_path"

    def __init__(self, problem: str) -> None:
        super().__init__(
            f"Invalid path: {problem}. The proxy forwards a `/v1/` path only in its one canonical "
            "spelling, and never one that a server could read as a metered endpoint or as a "
            "place above the upstream's base path."
        )


class UnsupportedContentType(InvalidRequest):
    code = "unsupported_content_type"

    def __init__(self, expected: str) -> None:
        super().__init__(
            f"Unsupported content type: this endpoint takes `{expected}` requests "
            "(set the Content-Type header to match the body)."
        )


class ModelNotServed(ProxyError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or is not served by any upstream of this proxy.",
            param="model",
        )


class BodyTooLarge(ProxyError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than this proxy's limit of {limit} bytes.")


class DatabaseUnavailable(ProxyError):
    status = 503
    code = "ledger_unavailable"


class UpstreamUnreachable(ProxyError):
    status = 502
    code = "upstream_unreachable"


class UpstreamFailed(ProxyError):
    status = 502
    code = "upstream_error"


class UpstreamTimeout(ProxyError):
    status = 504
    code = "upstream_timeout"


class ClosingRefusal(ProxyError):
    """A refusal of what the client is still sending: the connection is closed after it."""

    error_type = "invalid_request_error"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"connection", b"close")]


class RequestTimeout(ClosingRefusal):
    """The client stopped sending its request."""

    status = 408
    code = "request_timeout"


class HeadersTooLarge(ClosingRefusal):
    """The request's line and headers are longer than the server takes."""

    status = 431
    code = "request_headers_too_large"


class TooManyConnections(ProxyError):
    """The process holds as many client connections as it can: try again in a moment."""

    status = 503
    code = "too_many_connections"

    def __init__(self) -> None:
        super().__init__(
            "The proxy holds as many connections as it can take. Please retry in a moment."
        )

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"1"), (b"connection", b"close")]
