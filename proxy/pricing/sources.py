"""The seam between the catalog and its price sources: what a source is asked and answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from proxy.metering.usage import Price
from proxy.pricing.quantities import Quantities
from proxy.settings import UpstreamKind


@dataclass(frozen=True, slots=True)
class PricedCall:
    """One call as the price sources see it."""

    quantities: Quantities
    image_size: str | None
    image_quality: str | None
    model: str
    upstream_kind: UpstreamKind
    upstream_base_url: str
    at: datetime
    service_tier: str | None
    batch: bool


@dataclass(frozen=True, slots=True)
class Quote:
    """A source's price; `batch_priced` when it is already the Batch API price of the call."""

    price: Price
    batch_priced: bool = False


class PriceSource(Protocol):
    def quote(self, call: PricedCall) -> Quote | None:
        """The call's price, or None when this source does not know the model."""
        ...
