"""What admin operations refuse, in OpenAI's error shape (the admin API and the CLI share them)."""

from __future__ import annotations

from proxy.errors import ProxyError


class NotFound(ProxyError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class AlreadyExists(ProxyError):
    status = 409
    error_type = "invalid_request_error"
    code = "already_exists"


class InvalidAdminRequest(ProxyError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_value"
