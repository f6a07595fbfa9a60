"""The price of one call, from the first source that knows the model.

Sources in order: config overrides (`[prices."MODEL"]`, exact name then glob), genai-prices'
bundled data, the built-in table (DALL-E). No source knowing the model gives None: an unknown
price is never $0.

Batch API calls: a source's own batch price is used as it is (genai-prices' batch variants).
Otherwise the price is the standard one, and for OpenAI and Azure OpenAI upstreams OpenAI's
published Batch API discount (50% of input and output) is applied, marked `@batch-50%` in the
entry; for other upstreams no batch discount is known and the standard price stands.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from proxy.metering.usage import Price, Usage
from proxy.pricing.builtin import BuiltinPrices
from proxy.pricing.bundled import BundledPrices
from proxy.pricing.overrides import ConfigPrices
from proxy.pricing.quantities import Quantities
from proxy.pricing.sources import PricedCall, PriceSource, Quote
from proxy.settings import PriceOverride, UpstreamKind

BATCH_DISCOUNTED_KINDS: frozenset[UpstreamKind] = frozenset({"openai", "azure"})
BATCH_PRICE_FACTOR = Decimal("0.5")


class PriceCatalog:
    """Prices calls from config overrides, then genai-prices' bundled data, then built-ins."""

    def __init__(self, overrides: Mapping[str, PriceOverride]) -> None:
        self._sources: tuple[PriceSource, ...] = (
            ConfigPrices(overrides),
            BundledPrices(),
            BuiltinPrices(),
        )

    def price(
        self,
        usage: Usage,
        *,
        model: str,
        upstream_kind: UpstreamKind,
        upstream_base_url: str,
        at: datetime,
        service_tier: str | None = None,
        batch: bool = False,
    ) -> Price | None:
        """The call's price, or None when no source knows the model.

        `at` is the request time (timezone-aware), `service_tier` the tier the response reports,
        `batch` whether the call ran through the Batch API.
        """
        call = PricedCall(
            quantities=Quantities.of(usage),
            image_size=usage.image_size,
            image_quality=usage.image_quality,
            model=model,
            upstream_kind=upstream_kind,
            upstream_base_url=upstream_base_url,
            at=at,
            service_tier=service_tier,
            batch=batch,
        )
        for source in self._sources:
            quote = source.quote(call)
            if quote is not None:
                return _with_batch_discount(quote, call)
        return None


def _with_batch_discount(quote: Quote, call: PricedCall) -> Price:
    price = quote.price
    if not call.batch or quote.batch_priced or call.upstream_kind not in BATCH_DISCOUNTED_KINDS:
        return price
    return Price(
        price.cost_usd * BATCH_PRICE_FACTOR, f"{price.entry}@batch-50%", price.effective_from
    )
