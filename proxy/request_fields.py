"""The request body of a model-routed call, read once: its JSON object or its form's text fields."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.endpoints import BodyFormat, Endpoint
from proxy.errors import (
    InvalidJSON,
    InvalidRequest,
    InvalidValue,
    MissingParameter,
    UnsupportedContentType,
)

# Form fields larger than this are files (images, audio), never metering fields.
_MAX_TEXT_FIELD_BYTES = 4096
# OpenAI's own cap on `n` (chat and completions; images take at most 10), so no call OpenAI
# would serve is refused. A budget reserves output for every choice, and a self-hosted server
# would try to generate them all: a huge `n` is refused before it goes anywhere.
MAX_CHOICES = 128
# The ledger's `model` column. No model is named at such length; routing caches every name it
# sees and metrics keep some, so a name the size of the body is refused.
MAX_MODEL_LENGTH = 256


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
    """The fields of a model-routed call's body; `InvalidRequest` if it cannot be read, or if
    the fields routing and metering rely on (`model`, `n`) are missing or invalid."""
    _check_content_type(endpoint, content_type)
    document = (
        _form_text_fields(content_type, body)
        if endpoint.body is BodyFormat.MULTIPART
        else _json_object(body)
    )
    model = _model(endpoint, document.get("model"))
    _check_choices(endpoint, document.get("n"))
    stream = document.get("stream")
    return RequestFields(model=model, stream=stream is True or stream == "true", document=document)


def _check_content_type(endpoint: Endpoint, content_type: bytes) -> None:
    media_type = content_type.partition(b";")[0].strip().lower()
    # A body sent with no Content-Type at all (a hand-written script's) is read as JSON.
    if media_type == endpoint.body.value.encode() or (
        media_type == b"" and endpoint.body is BodyFormat.JSON
    ):
        return
    raise UnsupportedContentType(endpoint.body.value)


def _model(endpoint: Endpoint, value: Any) -> str | None:
    if value is None or value == "":
        if endpoint.model_required:
            raise MissingParameter("model")
        return None
    if not isinstance(value, str):
        raise InvalidValue("`model` must be a string.", param="model")
    if len(value) > MAX_MODEL_LENGTH:
        raise InvalidValue(
            f"`model` must be at most {MAX_MODEL_LENGTH} characters long.", param="model"
        )
    return value


def _check_choices(endpoint: Endpoint, value: Any) -> None:
    """`n`, where given, is a whole number from 1 to `MAX_CHOICES` (in a form: its digits)."""
    if value is None:
        return
    if endpoint.body is BodyFormat.MULTIPART and isinstance(value, str):
        value = int(value) if value.isascii() and value.isdigit() else None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHOICES:
        raise InvalidValue(f"`n` must be a whole number from 1 to {MAX_CHOICES}.", param="n")


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
