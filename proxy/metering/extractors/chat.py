"""Chat completions: `usage` in the body, or in the last chunk of a stream."""

from __future__ import annotations

from typing import Any

from proxy.metering import prompt_tokens, tokens
from proxy.metering.extractors.base import MeteredCall, number, reported_usage_object, text_of
from proxy.metering.tap import ResponseTap, parse_event
from proxy.metering.usage import Usage


def usage_from_chat_report(usage: dict[str, Any]) -> Usage:
    """OpenAI's `prompt_tokens`/`completion_tokens` report, details included."""
    return Usage(
        input_tokens=number(usage, "prompt_tokens"),
        cached_input_tokens=number(usage, "prompt_tokens_details", "cached_tokens"),
        audio_input_tokens=number(usage, "prompt_tokens_details", "audio_tokens"),
        output_tokens=number(usage, "completion_tokens"),
        reasoning_tokens=number(usage, "completion_tokens_details", "reasoning_tokens"),
        audio_output_tokens=number(usage, "completion_tokens_details", "audio_tokens"),
        accepted_prediction_tokens=number(
            usage, "completion_tokens_details", "accepted_prediction_tokens"
        ),
        rejected_prediction_tokens=number(
            usage, "completion_tokens_details", "rejected_prediction_tokens"
        ),
    )


def _generated_text(choice_parts: list[Any]) -> str:
    """Everything the model generated in these message or delta objects: text and tool calls."""
    pieces: list[str] = []
    for part in choice_parts:
        if not isinstance(part, dict):
            continue
        pieces.append(text_of(part.get("content")))
        pieces.append(text_of(part.get("refusal")))
        for call in part.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                pieces.append(text_of(function.get("name")))
                pieces.append(text_of(function.get("arguments")))
    return "".join(pieces)


def _choices(document: Any) -> list[Any]:
    choices = document.get("choices") if isinstance(document, dict) else None
    return choices if isinstance(choices, list) else []


class ChatExtractor:
    def reported(self, call: MeteredCall, tap: ResponseTap) -> Usage | None:
        found = reported_usage_object(tap)
        return None if found is None else usage_from_chat_report(found[0])

    def estimated(self, call: MeteredCall, tap: ResponseTap) -> Usage:
        if tap.is_event_stream:
            parts = [
                choice.get("delta")
                for data in tap.events
                for choice in _choices(parse_event(data))
                if isinstance(choice, dict)
            ]
        else:
            parts = [c.get("message") for c in _choices(tap.json_body()) if isinstance(c, dict)]
        prompt = prompt_tokens.count_chat_prompt(
            call.model, call.request.get("messages"), call.request.get("tools")
        )
        output = tokens.count_text(call.model, _generated_text(parts))
        return Usage(input_tokens=prompt, output_tokens=output, estimated=True)
