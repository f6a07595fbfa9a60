"""One metered call, from its arrival to its settlement: filled in as the call goes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from proxy.budgets.guard import NO_RESERVATION, Reservation
from proxy.callers import ANONYMOUS, Caller
from proxy.ids import new_request_id
from proxy.metering.attribution import Attribution
from proxy.metering.tap import Tap
from proxy.upstream.routing import Upstream

CLIENT_CLOSED = "client_closed"
# A call the proxy itself cut short: still running when the shutdown grace period ended.
INTERRUPTED = "interrupted"


@dataclass(slots=True)
class Exchange:
    created_at: datetime  # from the injected clock, as every time the proxy records
    caller: Caller = ANONYMOUS
    request_id: str = field(default_factory=new_request_id)
    started_at: float = field(default_factory=time.perf_counter)
    path: str = ""  # relative to /v1/
    family: str = "other"
    model: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    attribution: Attribution = field(default_factory=Attribution)
    trace_id: str | None = None
    parent_id: str | None = None
    upstream: Upstream | None = None
    forwarded_at: float | None = None
    tap: Tap | None = None
    # The upstream's status, the proxy's own error status, `client_closed` or `interrupted`; a
    # call that failed in a way nothing above foresaw stays the 500 its client gets.
    status: str = "500"
    # What admission took, given back when the call settles.
    reservation: Reservation = NO_RESERVATION
    trace_admitted: bool = False

    def client_closed(self) -> None:
        self.status = CLIENT_CLOSED

    def interrupted(self) -> None:
        self.status = INTERRUPTED

    @property
    def succeeded(self) -> bool:
        return self.status.startswith("2")
