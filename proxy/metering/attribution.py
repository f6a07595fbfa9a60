"""Who a call is for: end user, free-form tags, and the agent trace it belongs to.

Headers: `X-Metering-Tags: k=v,k2=v2`; `X-Metering-Trace-Id: ID`; `X-Metering-Parent-Id:
REQUEST_ID` (the `x-metering-request-id` of the call that caused this one); W3C `traceparent`.
Malformed `X-Metering-*` headers are refused, so nothing odd reaches a label or a row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import InvalidRequest

MAX_TAGS = 16
_TAG_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_TAG_VALUE = re.compile(r"[A-Za-z0-9_.:/@+\- ]{0,128}")
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
MAX_USER_LENGTH = 256


class InvalidMeteringHeader(InvalidRequest):
    code = "invalid_metering_header"


@dataclass(frozen=True, slots=True)
class Attribution:
    user: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # From the headers; the trace tracker decides the trace of calls that name only a parent.
    trace_id: str | None = None
    parent_id: str | None = None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            try:
                return value.decode("ascii").strip()
            except UnicodeDecodeError:
                raise InvalidMeteringHeader(f"The {name.decode()} header must be ASCII.") from None
    return None


def _tags(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    tags: dict[str, str] = {}
    for pair in raw.split(","):
        key, equals, value = pair.strip().partition("=")
        if not equals or not _TAG_KEY.fullmatch(key) or not _TAG_VALUE.fullmatch(value.strip()):
            raise InvalidMeteringHeader(
                "X-Metering-Tags must be comma-separated key=value pairs: keys of up to 64 "
                "letters, digits, '_', '.' or '-', values of up to 128 such characters "
                "(spaces, ':', '/', '@' and '+' allowed)."
            )
        tags[key] = value.strip()
    if len(tags) > MAX_TAGS:
        raise InvalidMeteringHeader(f"X-Metering-Tags takes at most {MAX_TAGS} tags.")
    return tags


def _id(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    value = _header(headers, name)
    if value is None or value == "":
        return None
    if not _ID.fullmatch(value):
        raise InvalidMeteringHeader(
            f"The {name.decode()} header must be 1 to 128 letters, digits, '_', '.', ':' or '-'."
        )
    return value


def _end_user(document: dict[str, Any]) -> str | None:
    for name in ("user", "safety_identifier"):
        value = document.get(name)
        if isinstance(value, str) and value:
            return value[:MAX_USER_LENGTH]
    return None


def attribute(headers: list[tuple[bytes, bytes]], document: dict[str, Any]) -> Attribution:
    """The call's attribution from its headers and request body."""
    trace_id = _id(headers, b"x-metering-trace-id")
    parent_id = _id(headers, b"x-metering-parent-id")
    traceparent = _header(headers, b"traceparent")
    # An invalid traceparent is ignored, as W3C Trace Context says.
    if traceparent and (match := _TRACEPARENT.fullmatch(traceparent)):
        trace_id = trace_id or match.group(1)
        parent_id = parent_id or match.group(2)
    return Attribution(
        user=_end_user(document),
        tags=_tags(_header(headers, b"x-metering-tags")),
        trace_id=trace_id,
        parent_id=parent_id,
    )
