"""What the proxy and its reports process tell each other, pickled over a pair of pipes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import ProxyError
from proxy.settings import PriceOverride, Settings, UpstreamConfig

# A report: a module-level coroutine function (pickled by name), given the reports process's
# ledger first; it answers the report's JSON document.
Report = Callable[..., Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What the reports process needs of the settings: no key of any upstream, no admin key."""

    database_url: str
    statement_timeout_seconds: float
    prices: Mapping[str, PriceOverride]
    upstreams: Mapping[str, UpstreamConfig]

    @classmethod
    def of(cls, settings: Settings) -> WorkerConfig:
        """The reports process's part of `settings`."""
        return cls(
            database_url=settings.environment.database_url,
            statement_timeout_seconds=settings.proxy.ledger.statement_timeout_seconds,
            prices=dict(settings.proxy.prices),
            upstreams={upstream.config.name: upstream.config for upstream in settings.upstreams},
        )


@dataclass(frozen=True, slots=True)
class Ready:
    """The reports process has started: its first message."""


@dataclass(frozen=True, slots=True)
class Start:
    """Run `report(ledger, *args, **kwargs)` as job `job`."""

    job: int
    report: Report
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop job `job` (its caller left, or its deadline passed)."""

    job: int


@dataclass(frozen=True, slots=True)
class Failure:
    """An error a report answers, as plain fields: any `ProxyError` crosses the pipe this way,
    whatever its constructor takes."""

    status: int
    error_type: str
    code: str | None
    message: str
    param: str | None
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def of(cls, error: ProxyError) -> Failure:
        return cls(
            error.status,
            error.error_type,
            error.code,
            error.message,
            error.param,
            tuple(error.headers()),
        )

    def error(self) -> ProxyError:
        """The error again, to raise where the caller waits."""
        return RelayedError(self)


class RelayedError(ProxyError):
    """A report's error, answered as the reports process told it."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message, param=failure.param)
        self.status = failure.status
        self.error_type = failure.error_type
        self.code = failure.code
        self._headers = list(failure.headers)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return self._headers


@dataclass(frozen=True, slots=True)
class Ended:
    """Job `job` ended: with its document, with an error, or (neither) cancelled."""

    job: int
    document: bytes | None = None
    failure: Failure | None = None
