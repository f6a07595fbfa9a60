"""Responses API: `usage` in the response, streamed in the `response.completed` event."""

from __future__ import annotations

from typing import Any

from proxy.metering import prompt_tokens, tokens
from proxy.metering.extractors.base import MeteredCall, number, reported_usage_object, text_of
from proxy.metering.tap import ResponseTap, parse_event
from proxy.metering.usage import Usage


def _output_text(response: Any) -> str:
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list):
        return ""
    pieces = []
    for item in output:
        if isinstance(item, dict):
            pieces.append(text_of(item.get("content")))
            pieces.append(text_of(item.get("arguments")))
    return "".join(pieces)


def _streamed_text(events: list[bytes]) -> str:
    pieces = []
    for data in events:
        event = parse_event(data)
        if isinstance(event, dict) and str(event.get("type", "")).endswith(".delta"):
            pieces.append(text_of(event.get("delta")))
    return "".join(pieces)


class ResponsesExtractor:
    def reported(self, call: MeteredCall, tap: ResponseTap) -> Usage | None:
        found = reported_usage_object(tap)
        if found is None:
            return None
        usage = found[0]
        return Usage(
            input_tokens=number(usage, "input_tokens"),
            cached_input_tokens=number(usage, "input_tokens_details", "cached_tokens"),
            output_tokens=number(usage, "output_tokens"),
            reasoning_tokens=number(usage, "output_tokens_details", "reasoning_tokens"),
        )

    def estimated(self, call: MeteredCall, tap: ResponseTap) -> Usage:
        request = call.request
        prompt = prompt_tokens.count_responses_input(
            call.model, request.get("instructions"), request.get("input"), request.get("tools")
        )
        text = _streamed_text(tap.events) if tap.is_event_stream else _output_text(tap.json_body())
        return Usage(
            input_tokens=prompt, output_tokens=tokens.count_text(call.model, text), estimated=True
        )
