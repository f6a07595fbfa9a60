"""The few fields of a request body that routing needs, read without re-encoding the body."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.endpoints import BodyFormat, Endpoint
from proxy.errors import InvalidJSON, InvalidRequest


@dataclass(frozen=True, slots=True)
class RequestFields:
    model: str | None
    stream: bool


_NO_FIELDS = RequestFields(model=None, stream=False)
_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)
_MODEL_PART = re.compile(rb'content-disposition:[^\r\n]*;\s*name="model"', re.IGNORECASE)


def read_request_fields(endpoint: Endpoint, content_type: bytes, body: bytes) -> RequestFields:
    """The routing fields of a model-routed call's body; `InvalidRequest` if it cannot be read."""
    if endpoint.body is BodyFormat.MULTIPART:
        return RequestFields(model=_multipart_model(content_type, body), stream=False)
    if not body:
        return _NO_FIELDS
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidJSON() from None
    if not isinstance(document, dict):
        raise InvalidJSON()
    model = document.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("`model` must be a string.", param="model")
    return RequestFields(model=model, stream=document.get("stream") is True)


def _multipart_model(content_type: bytes, body: bytes) -> str | None:
    """The value of the `model` form field: only the parts' headers are read, never a file."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise InvalidRequest("A multipart/form-data body needs a boundary in its Content-Type.")
    delimiter = b"--" + match.group(1)
    position = body.find(delimiter)
    while position >= 0:
        headers_start = position + len(delimiter) + 2  # past the CRLF after the delimiter
        headers_end = body.find(b"\r\n\r\n", headers_start)
        if headers_end < 0:
            return None
        next_delimiter = body.find(b"\r\n" + delimiter, headers_end)
        if _MODEL_PART.search(body, headers_start, headers_end):
            value = body[headers_end + 4 : next_delimiter if next_delimiter >= 0 else len(body)]
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(
                    "The `model` form field is not UTF-8.", param="model"
                ) from None
        position = next_delimiter + 2 if next_delimiter >= 0 else -1
    return None
