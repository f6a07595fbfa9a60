"""Images: how many were made, at which size and quality; gpt-image models also report tokens."""

from __future__ import annotations

from typing import Any

from proxy.metering.extractors.base import MeteredCall, number, reported_usage_object
from proxy.metering.tap import ResponseTap, parse_event
from proxy.metering.usage import Usage

_DEFAULT_SIZE = {"dall-e-2": "1024x1024", "dall-e-3": "1024x1024"}
_DEFAULT_QUALITY = {"dall-e-3": "standard"}


def _image_count(tap: ResponseTap) -> int:
    if tap.is_event_stream:
        # Streamed gpt-image calls end each image with an `image_*.completed` event.
        events = (parse_event(data) for data in tap.events)
        return sum(
            1
            for event in events
            if isinstance(event, dict) and str(event.get("type", "")).endswith(".completed")
        )
    body = tap.json_body()
    data = body.get("data") if isinstance(body, dict) else None
    return len(data) if isinstance(data, list) else 0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _asked_size(call: MeteredCall) -> str | None:
    return _text(call.request.get("size")) or _DEFAULT_SIZE.get(call.model)


def _asked_quality(call: MeteredCall) -> str | None:
    return _text(call.request.get("quality")) or _DEFAULT_QUALITY.get(call.model)


class ImagesExtractor:
    def reported(self, call: MeteredCall, tap: ResponseTap) -> Usage | None:
        images = _image_count(tap)
        found = reported_usage_object(tap)
        if images == 0 and found is None:
            return None
        usage, holder = found if found is not None else ({}, {})
        return Usage(
            input_tokens=number(usage, "input_tokens"),
            image_input_tokens=number(usage, "input_tokens_details", "image_tokens"),
            output_tokens=number(usage, "output_tokens"),
            images=images,
            image_size=_text(holder.get("size")) or _asked_size(call),
            image_quality=_text(holder.get("quality")) or _asked_quality(call),
        )

    def estimated(self, call: MeteredCall, tap: ResponseTap) -> Usage:
        """The images asked for (`n`, one by default), at the size and quality asked for."""
        asked = str(call.request.get("n", 1))  # a form's fields are strings
        return Usage(
            images=int(asked) if asked.isascii() and asked.isdigit() else 1,
            image_size=_asked_size(call),
            image_quality=_asked_quality(call),
            estimated=True,
        )
