"""Settlement: a finished exchange becomes one priced `UsageRecord`, handed to the sinks."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

from proxy.clock import Clock
from proxy.metering import prompt_tokens
from proxy.metering.batches import TrackedBatch
from proxy.metering.exchange import CLIENT_CLOSED, Exchange
from proxy.metering.extractors import EXTRACTORS, Extractor, MeteredCall
from proxy.metering.extractors.base import reported_usage_object
from proxy.metering.plausibility import ImplausibleReports, ImplausibleUsage, plausible
from proxy.metering.tap import ResponseTap
from proxy.metering.unpriced import UnpricedModelWarnings
from proxy.metering.usage import Price, PromptSplit, Usage, UsageRecord
from proxy.pricing.catalog import PriceCatalog
from proxy.sinks import Publisher
from proxy.upstream.routing import Upstream

NOTHING_BILLABLE = Price(cost_usd=Decimal(0), entry="none:nothing-billable")
_EMPTY = Usage()


class Settler:
    def __init__(self, catalog: PriceCatalog, publisher: Publisher, clock: Clock) -> None:
        self._catalog = catalog
        self._publisher = publisher
        self._clock = clock
        self._unpriced = UnpricedModelWarnings()
        self._implausible = ImplausibleReports(clock)

    def settle(self, exchange: Exchange) -> UsageRecord:
        """Build the exchange's record and publish it; called exactly once per call."""
        ended_at = time.perf_counter()
        usage = self._usage(exchange)
        tap = exchange.tap
        holder = _usage_holder(exchange)
        service_tier = holder.get("service_tier") if holder else None
        gpu_hours_pending = _priced_by_gpu_hours(exchange) and usage != _EMPTY
        price = None if gpu_hours_pending else self._price(exchange, usage, service_tier)
        if not gpu_hours_pending:
            self._warn_once_if_unpriced(exchange.model, price)
        record = UsageRecord(
            request_id=exchange.request_id,
            created_at=exchange.created_at,
            team=exchange.caller.team,
            key_id=exchange.caller.key_id,
            upstream=exchange.upstream.name if exchange.upstream else "none",
            endpoint=exchange.family,
            model=exchange.model,
            status=exchange.status,
            usage=usage,
            price=price,
            latency_seconds=ended_at - exchange.started_at,
            time_to_first_token_seconds=(
                tap.first_byte_at - exchange.started_at
                if tap is not None and tap.first_byte_at is not None
                else None
            ),
            overhead_seconds=(
                exchange.forwarded_at - exchange.started_at if exchange.forwarded_at else None
            ),
            user=_end_user(exchange),
            tags=exchange.attribution.tags,
            trace_id=exchange.trace_id,
            parent_id=exchange.parent_id,
            prompt_split=_prompt_split(exchange, usage),
            service_tier=service_tier if isinstance(service_tier, str) else None,
            gpu_hours_pending=gpu_hours_pending,
        )
        self._publisher.publish(record)
        return record

    def settle_batch_line(
        self, batch: TrackedBatch, upstream: Upstream, line: dict[str, Any]
    ) -> UsageRecord | None:
        """Record one request of a batch from its output line, at the batch price."""
        response, line_id = line.get("response"), line.get("id")
        if not isinstance(response, dict) or not isinstance(line_id, str):
            return None
        body = response.get("body")
        model = body.get("model") if isinstance(body, dict) else None
        extractor = EXTRACTORS.get(batch.family)
        usage = _EMPTY
        if extractor is not None and isinstance(model, str):
            call = MeteredCall(batch.path, model, {})
            tap = ResponseTap.answered_with(body)
            usage = self._reported(extractor, call, tap, upstream.name) or _EMPTY
        now = self._clock()
        price = (
            NOTHING_BILLABLE
            if usage == _EMPTY
            else self._catalog.price(
                usage,
                model=str(model),
                upstream_kind=upstream.config.kind,
                upstream_base_url=upstream.config.base_url,
                at=now,
                batch=True,
            )
        )
        self._warn_once_if_unpriced(str(model), price)
        record = UsageRecord(
            request_id=line_id,
            created_at=now,
            team=batch.team,
            upstream=upstream.name,
            endpoint=batch.family,
            model=str(model or ""),
            status=str(response.get("status_code", "")),
            usage=usage,
            price=price,
            latency_seconds=0.0,
            tags={"batch_id": batch.batch_id},
            batch=True,
        )
        self._publisher.publish(record)
        return record

    def _warn_once_if_unpriced(self, model: str, price: Price | None) -> None:
        if price is None:
            self._unpriced.note(model)

    def _usage(self, exchange: Exchange) -> Usage:
        extractor = EXTRACTORS.get(exchange.family)
        if extractor is None or not isinstance(exchange.tap, ResponseTap):
            return _EMPTY
        call = MeteredCall(exchange.path, exchange.model, exchange.request)
        upstream = exchange.upstream.name if exchange.upstream else "none"
        reported = self._reported(extractor, call, exchange.tap, upstream)
        if reported is not None:
            return reported
        # Nothing reported: a server that never reports, a 2xx answer cut short (the tap keeps
        # the upstream's status when the exchange's turns 502 or 504), or a client that hung up.
        if 200 <= exchange.tap.status < 300 or exchange.status == CLIENT_CLOSED:
            return extractor.estimated(call, exchange.tap)
        return _EMPTY  # an upstream error that reported nothing consumed nothing billable

    def _reported(
        self, extractor: Extractor, call: MeteredCall, tap: ResponseTap, upstream: str
    ) -> Usage | None:
        """What the upstream reported, or None if nothing; a report that cannot be true gives way
        to the estimate, and one found before part of the answer went unread is flagged."""
        try:
            reported = extractor.reported(call, tap)
            if reported is None:
                return None
            plausible(reported)
        except ImplausibleUsage as error:
            self._implausible.warn(upstream, call.model, error)
            # Flagged even where nothing can be counted: the record is not the upstream's word.
            return replace(extractor.estimated(call, tap), estimated=True)
        return replace(reported, estimated=True) if tap.unread_since_usage else reported

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


def _end_user(exchange: Exchange) -> str | None:
    """A key issued for one end user names it; otherwise the request's `user` field does."""
    key = exchange.caller.key
    if key is not None and key.end_user is not None:
        return key.end_user
    return exchange.attribution.user


def _priced_by_gpu_hours(exchange: Exchange) -> bool:
    return exchange.upstream is not None and exchange.upstream.config.hourly_cost_usd is not None


def _usage_holder(exchange: Exchange) -> dict[str, Any] | None:
    if not isinstance(exchange.tap, ResponseTap) or exchange.family not in (
        "chat",
        "responses",
        "completions",
    ):
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
