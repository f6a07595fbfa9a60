"""What every usage extractor gets, and the small readers they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from proxy.metering.plausibility import ImplausibleUsage, whole_number
from proxy.metering.tap import ResponseTap, parse_event
from proxy.metering.usage import Usage


@dataclass(frozen=True, slots=True)
class MeteredCall:
    """The request side of a call, as metering sees it."""

    path: str  # relative to /v1/, e.g. "audio/speech"
    model: str
    request: dict[str, Any]  # the JSON body, or a form's text fields


class Extractor(Protocol):
    def reported(self, call: MeteredCall, tap: ResponseTap) -> Usage | None:
        """The usage the upstream reported in its answer, or None if it reported none;
        `ImplausibleUsage` if a count in the report is not a whole number."""
        ...

    def estimated(self, call: MeteredCall, tap: ResponseTap) -> Usage:
        """A tiktoken estimate, for answers that reported nothing (or were cut short)."""
        ...


def number(document: Any, *path: str) -> int:
    """The count at `path` in nested dicts: 0 when absent (or null), `ImplausibleUsage` when it
    is there but not a whole number."""
    value = document
    for key in path:
        if value is None:
            return 0
        if not isinstance(value, dict):
            raise ImplausibleUsage(f"{'.'.join(path)} is in {value!r:.40}, not in an object")
        value = value.get(key)
    return whole_number(value, ".".join(path))


def reported_usage_object(tap: ResponseTap) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The last usage object of the answer and the object holding it (the body or an event).

    For Responses API events the usage sits in `response`, which is then the holder.
    """
    documents: list[Any]
    if tap.is_event_stream:
        documents = [parse_event(data) for data in reversed(tap.usage_events)]
    else:
        documents = [tap.json_body()]
    for document in documents:
        if not isinstance(document, dict):
            continue
        response = document.get("response")
        holder: dict[str, Any] = response if isinstance(response, dict) else document
        usage = holder.get("usage")
        if isinstance(usage, dict):
            return usage, holder
    return None


def text_of(value: Any) -> str:
    """Text found in a string or a list of strings/content parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            text_of(item.get("text") if isinstance(item, dict) else item) for item in value
        )
    return ""


class NoEstimate:
    """For families with nothing tiktoken could count: what was reported, or nothing."""

    def estimated(self, call: MeteredCall, tap: ResponseTap) -> Usage:
        return Usage()
