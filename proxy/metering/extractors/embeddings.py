"""Embeddings: `usage.prompt_tokens`; estimated from the input strings or token arrays."""

from __future__ import annotations

from typing import Any

from proxy.metering import tokens
from proxy.metering.extractors.base import MeteredCall, number, reported_usage_object
from proxy.metering.tap import ResponseTap
from proxy.metering.usage import Usage


def _input_tokens(model: str, value: Any) -> int:
    if isinstance(value, str):
        return tokens.count_text(model, value)
    if isinstance(value, list):
        if all(isinstance(item, int) for item in value):
            return len(value)  # already tokens
        return sum(_input_tokens(model, item) for item in value)
    return 0


class EmbeddingsExtractor:
    def reported(self, call: MeteredCall, tap: ResponseTap) -> Usage | None:
        found = reported_usage_object(tap)
        return None if found is None else Usage(input_tokens=number(found[0], "prompt_tokens"))

    def estimated(self, call: MeteredCall, tap: ResponseTap) -> Usage:
        tokens_in = _input_tokens(call.model, call.request.get("input"))
        return Usage(input_tokens=tokens_in, estimated=True)
