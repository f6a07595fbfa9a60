"""Every Prometheus metric the proxy exports, in one place, and the sink that feeds them.

Labels are bounded: teams and upstreams come from the config, endpoint families and statuses
from small fixed sets, and models fold into `other` past `MAX_MODEL_LABELS` distinct names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from proxy.ledger.gpu_hours import CostChange
from proxy.ledger.writer import LedgerMetrics
from proxy.metering.traces import TraceSummary
from proxy.metering.usage import UsageRecord

MAX_MODEL_LABELS = 200
OTHER_MODEL = "other"

_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60)
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 240, 480, 900)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.05)
_TRACE_CALL_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144)


class Metrics:
    """The proxy's metrics, registered on one registry (one per app, so tests stay apart).

    With a multiprocess directory (`serve --workers N`), every worker writes its values there and
    `/metrics` reads all of them, so any worker answers with the totals of all.
    """

    def __init__(self, registry: CollectorRegistry, multiprocess_dir: Path | None = None) -> None:
        self.registry = registry
        self._multiprocess_dir = multiprocess_dir
        self.requests = Counter(
            "llm_proxy_requests",
            "Calls through the proxy.",
            ["team", "model", "upstream", "endpoint", "status"],
            registry=registry,
        )
        self.tokens = Counter(
            "llm_proxy_tokens",
            "Tokens by kind, as OpenAI counts them (input includes cached_input, output "
            "includes reasoning).",
            ["team", "model", "upstream", "kind"],
            registry=registry,
        )
        self.cost = Counter(
            "llm_proxy_cost_usd",
            "Cost of priced calls in USD.",
            ["team", "model", "upstream"],
            registry=registry,
        )
        self.unpriced = Counter(
            "llm_proxy_unpriced_requests",
            "Calls whose model has no known price (their cost is unknown, not zero).",
            ["model"],
            registry=registry,
        )
        self.duration = Histogram(
            "llm_proxy_request_duration_seconds",
            "Whole call duration, as the client sees it.",
            ["model", "upstream", "endpoint"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "llm_proxy_time_to_first_token_seconds",
            "Time from the call to the first byte of the upstream's answer.",
            ["model", "upstream"],
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "llm_proxy_overhead_seconds",
            "Time the proxy itself added before forwarding a call.",
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.trace_calls = Histogram(
            "llm_proxy_trace_calls",
            "Calls per finished agent trace.",
            buckets=_TRACE_CALL_BUCKETS,
            registry=registry,
        )
        self.sink_errors = Counter(
            "llm_proxy_sink_errors",
            "Settled records a sink failed to take.",
            ["sink"],
            registry=registry,
        )
        self.ledger = LedgerMetrics(
            queue=Gauge(
                "llm_proxy_ledger_queue_records",
                "Settled records not yet in the database.",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            spooled=Gauge(
                "llm_proxy_ledger_spooled_records",
                "Records held in the local journal because the database failed, or left by a "
                "process that died.",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            write_errors=Counter(
                "llm_proxy_ledger_write_errors",
                "Failed ledger writes (each is retried).",
                registry=registry,
            ),
        )
        self.budgets = BudgetMetrics(
            # Every process reads the same spend from the database: the newest value is the
            # answer, not a sum over workers.
            spend=Gauge(
                "llm_proxy_budget_spend_usd",
                "Spend of the team's current budget period in USD, as the ledger has it.",
                ["team", "period"],
                registry=registry,
                multiprocess_mode="livemostrecent",
            ),
            limit=Gauge(
                "llm_proxy_budget_limit_usd",
                "The team's budget limit for the period in USD.",
                ["team", "period"],
                registry=registry,
                multiprocess_mode="livemostrecent",
            ),
            alerts=Counter(
                "llm_proxy_budget_alerts",
                "Budget alerts raised (each once per threshold per period per team).",
                ["team", "kind"],
                registry=registry,
            ),
            deliveries=Counter(
                "llm_proxy_alert_deliveries",
                "Attempts to deliver an alert to a sink, by outcome (delivered, retry, failed).",
                ["sink_kind", "outcome"],
                registry=registry,
            ),
        )
        self._models: set[str] = set()

    def exposition(self) -> bytes:
        """The Prometheus text of every metric (of every worker, in multiprocess mode)."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        # prometheus-client leaves these two untyped.
        multiprocess.MultiProcessCollector(registry, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def forget_this_process(self) -> None:
        """At exit: this process's live gauges no longer count (multiprocess mode)."""
        if self._multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]

    def model_label(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODEL_LABELS:
            return OTHER_MODEL
        self._models.add(model)
        return model

    def add_gpu_hour_costs(self, changes: Sequence[CostChange]) -> None:
        """Cost put on self-hosted calls once their hour was split (a counter only goes up)."""
        for change in changes:
            if change.cost_usd > 0:
                labels = (change.team, self.model_label(change.model), change.upstream)
                self.cost.labels(*labels).inc(float(change.cost_usd))

    def observe_trace(self, summary: TraceSummary) -> None:
        self.trace_calls.observe(summary.calls)


@dataclass(frozen=True, slots=True)
class BudgetMetrics:
    spend: Gauge
    limit: Gauge
    alerts: Counter
    deliveries: Counter


_TOKEN_KINDS = (
    ("input", "input_tokens"),
    ("cached_input", "cached_input_tokens"),
    ("output", "output_tokens"),
    ("reasoning", "reasoning_tokens"),
    ("audio_input", "audio_input_tokens"),
    ("audio_output", "audio_output_tokens"),
)


class _Children:
    """A metric's child per label set, looked up once: `labels()` validates the labels and takes
    a lock on every call, which the request path need not pay. Label sets are bounded (see the
    module's docstring), and so is this cache."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class MetricsSink:
    """Feeds the metrics from each settled record."""

    name = "metrics"

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._requests = _Children(metrics.requests)
        self._tokens = _Children(metrics.tokens)
        self._cost = _Children(metrics.cost)
        self._unpriced = _Children(metrics.unpriced)
        self._duration = _Children(metrics.duration)
        self._time_to_first_token = _Children(metrics.time_to_first_token)

    def publish(self, record: UsageRecord) -> None:
        metrics = self._metrics
        model = metrics.model_label(record.model or "unknown")
        team, upstream = record.team, record.upstream
        self._requests(team, model, upstream, record.endpoint, record.status).inc()
        for kind, attribute in _TOKEN_KINDS:
            count = getattr(record.usage, attribute)
            if count:
                self._tokens(team, model, upstream, kind).inc(count)
        if record.price is not None:
            if record.price.cost_usd:
                self._cost(team, model, upstream).inc(float(record.price.cost_usd))
        elif not record.gpu_hours_pending:  # GPU hours are added once their hour is split
            self._unpriced(model).inc()
        if not record.batch:  # a batch request's duration is the batch's, not a call's
            self._duration(model, upstream, record.endpoint).observe(record.latency_seconds)
        if record.overhead_seconds is not None:
            metrics.overhead.observe(record.overhead_seconds)
        if record.time_to_first_token_seconds is not None:
            self._time_to_first_token(model, upstream).observe(record.time_to_first_token_seconds)
