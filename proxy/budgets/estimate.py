"""What a call about to be forwarded may cost: the amount a hard budget reserves for it.

The prompt is counted with tiktoken (the same estimator metering falls back on), the answer at
the most the request allows (`max_completion_tokens`, `max_tokens`, `max_output_tokens`) or,
when it sets no maximum, the configured output allowance, times `n`. Images count as asked.
A call whose price is unknown, or whose upstream is priced by GPU hour, reserves nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from proxy.metering.extractors import EXTRACTORS, MeteredCall
from proxy.metering.tap import ResponseTap
from proxy.metering.usage import Usage
from proxy.pricing.catalog import PriceCatalog
from proxy.upstream.routing import Upstream

_ANSWERING_FAMILIES = ("chat", "completions", "responses")
_OUTPUT_LIMITS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _choices(request: dict[str, Any]) -> int:
    return _positive_int(request.get("n")) or 1


def _output_tokens(request: dict[str, Any], allowance: int) -> int:
    for name in _OUTPUT_LIMITS:
        limit = _positive_int(request.get(name))
        if limit is not None:
            return limit
    return allowance


def estimated_usage(
    family: str, path: str, model: str, request: dict[str, Any], output_allowance: int
) -> Usage:
    """The most a call may consume, as far as the request says (see the module's docstring)."""
    if family == "images":
        return Usage(
            images=_choices(request),
            image_size=request.get("size") if isinstance(request.get("size"), str) else None,
            image_quality=(
                request.get("quality") if isinstance(request.get("quality"), str) else None
            ),
        )
    extractor = EXTRACTORS.get(family)
    if extractor is None:
        return Usage()
    prompt = extractor.estimated(MeteredCall(path, model, request), ResponseTap.answered_with({}))
    if family not in _ANSWERING_FAMILIES:
        return replace(prompt, output_tokens=0)
    output = _output_tokens(request, output_allowance) * _choices(request)
    return replace(prompt, output_tokens=output)


def estimated_cost(
    catalog: PriceCatalog,
    upstream: Upstream,
    usage: Usage,
    model: str,
    at: datetime,
) -> Decimal:
    if usage == Usage() or upstream.config.hourly_cost_usd is not None:
        return Decimal(0)
    price = catalog.price(
        usage,
        model=model,
        upstream_kind=upstream.config.kind,
        upstream_base_url=upstream.config.base_url,
        at=at,
    )
    return Decimal(0) if price is None else price.cost_usd
