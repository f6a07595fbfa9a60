"""What the JSON APIs (`/admin/*`, `/usage/*`) share: OpenAI-shaped errors and the admin key.

Every answer other than 2xx is in OpenAI's error shape, bad parameters included (400, never
FastAPI's 422), so that clients handle the proxy's errors one way.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, SecretStr
from starlette.exceptions import HTTPException

from proxy.errors import DatabaseUnavailable, InvalidJSON, InvalidRequest, ProxyError
from proxy.ledger.database import DATABASE_ERRORS

logger = logging.getLogger(__name__)


class Unauthorized(ProxyError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"www-authenticate", b"Bearer")]


class InvalidParameter(InvalidRequest):
    code = "invalid_parameter"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorDocument(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


def error_responses(**descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for errors, by status (`_401="..."`)."""
    return {
        int(status.lstrip("_")): {"model": ErrorDocument, "description": description}
        for status, description in descriptions.items()
    }


class OpenAIErrorRoute(APIRoute):
    """Answers every error of the route, from parameter parsing on, in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                return error_response(_invalid_parameter(error))
            except ProxyError as error:
                return error_response(error)
            except DATABASE_ERRORS as error:
                logger.warning(
                    "%s %s: the database failed: %s", request.method, request.url.path, error
                )
                return error_response(DatabaseUnavailable("The ledger database is unavailable."))

        return handle


def error_response(error: ProxyError) -> Response:
    headers = {name.decode(): value.decode() for name, value in error.headers()}
    return Response(error.body(), error.status, headers, media_type="application/json")


class FrameworkRefusal(ProxyError):
    """A refusal of Starlette's own: no such path, a method not allowed, an unreadable body."""

    error_type = "invalid_request_error"

    def __init__(self, refusal: HTTPException) -> None:
        super().__init__(str(refusal.detail))
        self.status = refusal.status_code
        self._headers = dict(refusal.headers or {})

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(name.encode(), value.encode()) for name, value in self._headers.items()]


async def framework_refusal(request: Request, refusal: HTTPException) -> Response:
    """Starlette's refusals in OpenAI's shape, with their headers (a 405's `Allow`)."""
    return error_response(FrameworkRefusal(refusal))


async def unexpected_error(request: Request, error: Exception) -> Response:
    """What no route foresaw: a 500 in OpenAI's shape (Starlette still logs the traceback)."""
    return error_response(ProxyError("The proxy failed unexpectedly; its log says why."))


def _invalid_parameter(error: RequestValidationError) -> InvalidRequest:
    first: dict[str, Any] = next(iter(error.errors()), {})
    if first.get("type") == "json_invalid":  # its location is a character offset, not a name
        return InvalidJSON()
    location = tuple(first.get("loc", ()))
    if location and location[0] in ("body", "query", "path", "header"):
        location = location[1:]  # where FastAPI found it, not part of the parameter's name
    param = ".".join(str(part) for part in location) or None
    what = "body" if param is None else f"`{param}`"
    return InvalidParameter(f"Invalid {what}: {first.get('msg', 'invalid value')}.", param=param)


def bearer_token(request: Request) -> str | None:
    """The token of the request's `Authorization: Bearer TOKEN`, if it has one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def presents_admin_key(request: Request, admin_key: SecretStr) -> bool:
    token = bearer_token(request)
    if token is None:
        return False
    # Starlette decodes headers as latin-1: encoding back gives the bytes the client sent.
    return hmac.compare_digest(token.encode("latin-1"), admin_key.get_secret_value().encode())


async def require_admin_key(request: Request) -> None:
    """`/admin/*`: `Authorization: Bearer <METERING_ADMIN_KEY>`; with no admin key set, the
    admin API is closed (the CLI, which works on the database, still is not)."""
    admin_key: SecretStr | None = request.app.state.admin_key
    if admin_key is None:
        raise Unauthorized(
            "The admin API is disabled: set METERING_ADMIN_KEY to use it (or use the "
            "`metering-proxy teams|keys|budgets` commands)."
        )
    if not presents_admin_key(request, admin_key):
        raise Unauthorized("This needs `Authorization: Bearer` with the admin key.")
