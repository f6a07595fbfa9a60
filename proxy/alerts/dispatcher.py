"""Sends queued alert deliveries to their sinks, retrying with exponential backoff.

Each pass claims the deliveries that are due (so no other process sends them meanwhile), POSTs
them concurrently and records the outcome: a 2xx answer delivers, anything else is retried
later, up to `max_attempts`. Delivery is at least once: a process that dies between a sink's
answer and the database write leaves the claim to run out, and the delivery is sent again
(webhook receivers dedupe on `X-Metering-Alert-Id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import Counter

from proxy.alerts.sinks import slack_request, webhook_request
from proxy.alerts.store import AlertStore, Delivery, SinkTarget
from proxy.clock import Clock, utc_now
from proxy.ledger.database import DATABASE_ERRORS

logger = logging.getLogger(__name__)

SessionFactory = Callable[[aiohttp.ClientTimeout], aiohttp.ClientSession]


class AlertDispatcher:
    def __init__(
        self,
        store: AlertStore,
        deliveries: Counter,
        clock: Clock = utc_now,
        *,
        poll_seconds: float = 1.0,
        max_attempts: int = 8,
        first_backoff_seconds: float = 1.0,
        longest_backoff_seconds: float = 300.0,
        timeout_seconds: float = 10.0,
        batch_size: int = 50,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self._store = store
        self._deliveries = deliveries
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._max_attempts = max_attempts
        self._first_backoff = first_backoff_seconds
        self._longest_backoff = longest_backoff_seconds
        self._timeout = timeout_seconds
        self._batch_size = batch_size
        # Long enough for every send of a batch (they run concurrently) and the writes after.
        self._claim_seconds = 2 * timeout_seconds + 30
        self._session_factory = session_factory or _default_session
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Start a pass now (call from the dispatcher's event loop, e.g. after `record`)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; never raises for a failing sink or database."""
        while True:
            self._wake.clear()
            claimed = 0
            try:
                claimed = await self.run_once()
            except DATABASE_ERRORS as error:
                logger.warning("alert delivery pass failed, retrying: %s", _brief(error))
            except Exception:
                logger.exception("alert delivery pass failed unexpectedly, retrying")
            if claimed >= self._batch_size:
                continue  # More may be due already.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)

    async def run_once(self) -> int:
        """Claim and send what is due now; return how many deliveries were attempted."""
        due = await self._store.claim_due(self._clock(), self._claim_seconds, self._batch_size)
        if due:
            await asyncio.gather(*(self._deliver(delivery) for delivery in due))
        return len(due)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver(self, delivery: Delivery) -> None:
        error = await self._send(delivery)
        try:
            await self._record(delivery, error)
        except DATABASE_ERRORS as database_error:
            # The claim runs out and another pass sends it again.
            logger.warning(
                "could not record the delivery of alert %s to %s: %s",
                delivery.alert_id,
                _describe(delivery.sink),
                _brief(database_error),
            )

    async def _send(self, delivery: Delivery) -> str | None:
        """POST the delivery; None when the sink accepted it, else what went wrong."""
        sink = delivery.sink
        try:
            if sink.kind == "slack":
                body, headers = slack_request(delivery.payload)
            else:
                body, headers = webhook_request(delivery.payload, sink.secret)
            async with self._session_of().post(
                sink.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self._timeout:g} seconds"
        except Exception as error:
            return _redacted(f"{type(error).__name__}: {error}", sink.url)

    async def _record(self, delivery: Delivery, error: str | None) -> None:
        now = self._clock()
        kind = delivery.sink.kind
        if error is None:
            await self._store.delivered(delivery, now)
            self._deliveries.labels(sink_kind=kind, outcome="delivered").inc()
            return
        gives_up = delivery.attempt >= self._max_attempts
        next_attempt_at = None if gives_up else now + self._backoff(delivery.attempt)
        await self._store.failed(delivery, error, next_attempt_at, now)
        self._deliveries.labels(sink_kind=kind, outcome="failed" if gives_up else "retry").inc()
        logger.warning(
            "alert %s to %s failed (attempt %d of %d): %s%s",
            delivery.alert_id,
            _describe(delivery.sink),
            delivery.attempt,
            self._max_attempts,
            error,
            "; giving up" if gives_up else "",
        )

    def _backoff(self, attempt: int) -> timedelta:
        seconds = self._first_backoff * 2 ** min(attempt - 1, 32)
        return timedelta(seconds=min(seconds, self._longest_backoff))

    def _session_of(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._session_factory(aiohttp.ClientTimeout(total=self._timeout))
        return self._session


def _default_session(timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=timeout)


def _describe(sink: SinkTarget) -> str:
    """The sink for logs: its id, kind and origin (a Slack URL's path is its credential)."""
    return f"{sink.kind} sink {sink.id} ({_origin(sink.url)})"


def _origin(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}{'' if parts.port is None else f':{parts.port}'}"
    except ValueError:
        return "an invalid URL"


def _redacted(message: str, url: str) -> str:
    """An error message without the URL's path and query, which may hold a credential."""
    return message.replace(url, _origin(url))


def _brief(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
