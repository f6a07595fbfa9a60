"""Settlement: a finished exchange becomes one priced `UsageRecord`, handed to the sinks."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from proxy.metering import prompt_tokens
from proxy.metering.exchange import CLIENT_CLOSED, Exchange
from proxy.metering.extractors import EXTRACTORS, MeteredCall
from proxy.metering.extractors.base import reported_usage_object
from proxy.metering.usage import Price, PromptSplit, Usage, UsageRecord
from proxy.pricing.catalog import PriceCatalog
from proxy.sinks import Publisher

NOTHING_BILLABLE = Price(cost_usd=Decimal(0), entry="none:nothing-billable")
_EMPTY = Usage()


class Settler:
    def __init__(self, catalog: PriceCatalog, publisher: Publisher) -> None:
        self._catalog = catalog
        self._publisher = publisher

    def settle(self, exchange: Exchange) -> UsageRecord:
        """Build the exchange's record and publish it; called exactly once per call."""
        ended_at = time.perf_counter()
        usage = self._usage(exchange)
        tap = exchange.tap
        holder = _usage_holder(exchange)
        service_tier = holder.get("service_tier") if holder else None
        record = UsageRecord(
            request_id=exchange.request_id,
            created_at=exchange.created_at,
            team=exchange.caller.team,
            upstream=exchange.upstream.name if exchange.upstream else "none",
            endpoint=exchange.family,
            model=exchange.model,
            status=exchange.status,
            usage=usage,
            price=self._price(exchange, usage, service_tier),
            latency_seconds=ended_at - exchange.started_at,
            time_to_first_token_seconds=(
                tap.first_byte_at - exchange.started_at
                if tap is not None and tap.first_byte_at is not None
                else None
            ),
            overhead_seconds=(
                exchange.forwarded_at - exchange.started_at if exchange.forwarded_at else None
            ),
            user=exchange.attribution.user,
            tags=exchange.attribution.tags,
            trace_id=exchange.trace_id,
            parent_id=exchange.parent_id,
            prompt_split=_prompt_split(exchange, usage),
            service_tier=service_tier if isinstance(service_tier, str) else None,
        )
        self._publisher.publish(record)
        return record

    def _usage(self, exchange: Exchange) -> Usage:
        extractor = EXTRACTORS.get(exchange.family)
        if extractor is None or exchange.tap is None:
            return _EMPTY
        call = MeteredCall(exchange.path, exchange.model, exchange.request)
        reported = extractor.reported(call, exchange.tap)
        if reported is not None:
            return reported
        if exchange.succeeded or exchange.status == CLIENT_CLOSED:
            # Nothing reported: a server that never reports, or a client that hung up first.
            return extractor.estimated(call, exchange.tap)
        return _EMPTY  # an upstream error that reported nothing consumed nothing billable

    def _price(self, exchange: Exchange, usage: Usage, service_tier: Any) -> Price | None:
        if usage == _EMPTY or exchange.upstream is None:
            return NOTHING_BILLABLE
        return self._catalog.price(
            usage,
            model=exchange.model,
            upstream_kind=exchange.upstream.config.kind,
            upstream_base_url=exchange.upstream.config.base_url,
            at=exchange.created_at,
            service_tier=service_tier if isinstance(service_tier, str) else None,
        )


def _usage_holder(exchange: Exchange) -> dict[str, Any] | None:
    if exchange.tap is None or exchange.family not in ("chat", "responses", "completions"):
        return None
    found = reported_usage_object(exchange.tap)
    return None if found is None else found[1]


def _prompt_split(exchange: Exchange, usage: Usage) -> PromptSplit | None:
    """Where the input tokens came from, for chat and responses calls."""
    request = exchange.request
    if usage.input_tokens == 0:
        return None
    if exchange.family == "chat":
        return prompt_tokens.split_prompt(
            exchange.model, request.get("messages"), request.get("tools"), usage.input_tokens
        )
    if exchange.family == "responses":
        return prompt_tokens.split_responses_prompt(
            exchange.model,
            request.get("instructions"),
            request.get("input"),
            request.get("tools"),
            usage.input_tokens,
        )
    return None
