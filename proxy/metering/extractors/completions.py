"""Legacy completions: the same usage report as chat, text in `choices[].text`."""

from __future__ import annotations

from typing import Any

from proxy.metering import tokens
from proxy.metering.extractors.base import MeteredCall, reported_usage_object, text_of
from proxy.metering.extractors.chat import usage_from_chat_report
from proxy.metering.tap import ResponseTap, parse_event
from proxy.metering.usage import Usage


def _texts(document: Any) -> str:
    choices = document.get("choices") if isinstance(document, dict) else None
    if not isinstance(choices, list):
        return ""
    return "".join(text_of(c.get("text")) for c in choices if isinstance(c, dict))


class CompletionsExtractor:
    def reported(self, call: MeteredCall, tap: ResponseTap) -> Usage | None:
        found = reported_usage_object(tap)
        return None if found is None else usage_from_chat_report(found[0])

    def estimated(self, call: MeteredCall, tap: ResponseTap) -> Usage:
        documents = (
            [parse_event(d) for d in tap.events] if tap.is_event_stream else [tap.json_body()]
        )
        output = "".join(_texts(document) for document in documents)
        prompt = call.request.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        return Usage(
            input_tokens=sum(tokens.count_text(call.model, text_of(p)) for p in prompts),
            output_tokens=tokens.count_text(call.model, output),
            estimated=True,
        )
