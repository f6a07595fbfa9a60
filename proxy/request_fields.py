"""The request body of a model-routed call, read once: its JSON object or its form's text fields."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.endpoints import BodyFormat, Endpoint
from proxy.errors import InvalidJSON, InvalidRequest

# Form fields larger than this are files (images, audio), never metering fields.
_MAX_TEXT_FIELD_BYTES = 4096


@dataclass(frozen=True, slots=True)
class RequestFields:
    model: str | None
    stream: bool
    # The JSON body, or a multipart form's small text fields (all values strings).
    document: dict[str, Any] = field(default_factory=dict)


_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)
_PART_NAME = re.compile(rb'content-disposition:[^\r\n]*;\s*name="([^"]*)"', re.IGNORECASE)
_PART_FILENAME = re.compile(rb";\s*filename", re.IGNORECASE)


def read_request_fields(endpoint: Endpoint, content_type: bytes, body: bytes) -> RequestFields:
    """The fields of a model-routed call's body; `InvalidRequest` if it cannot be read."""
    document = (
        _form_text_fields(content_type, body)
        if endpoint.body is BodyFormat.MULTIPART
        else _json_object(body)
    )
    model = document.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("`model` must be a string.", param="model")
    stream = document.get("stream")
    return RequestFields(model=model, stream=stream is True or stream == "true", document=document)


def _json_object(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidJSON() from None
    if not isinstance(document, dict):
        raise InvalidJSON()
    return document


def _form_text_fields(content_type: bytes, body: bytes) -> dict[str, Any]:
    """The form's text fields: only the parts' headers are scanned, file contents never read."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise InvalidRequest("A multipart/form-data body needs a boundary in its Content-Type.")
    delimiter = b"--" + match.group(1)
    fields: dict[str, Any] = {}
    position = body.find(delimiter)
    while position >= 0:
        headers_start = position + len(delimiter) + 2  # past the CRLF after the delimiter
        headers_end = body.find(b"\r\n\r\n", headers_start)
        if headers_end < 0:
            break
        next_delimiter = body.find(b"\r\n" + delimiter, headers_end)
        value_end = next_delimiter if next_delimiter >= 0 else len(body)
        name = _PART_NAME.search(body, headers_start, headers_end)
        is_file = _PART_FILENAME.search(body, headers_start, headers_end) is not None
        if name and not is_file and value_end - headers_end - 4 <= _MAX_TEXT_FIELD_BYTES:
            try:
                fields[name.group(1).decode()] = body[headers_end + 4 : value_end].decode()
            except UnicodeDecodeError:
                raise InvalidRequest("A form field is not UTF-8.") from None
        position = next_delimiter + 2 if next_delimiter >= 0 else -1
    return fields
