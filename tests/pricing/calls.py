"""Shared helpers for the pricing tests: one call to the catalog with sensible defaults."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from proxy.metering.usage import Price, Usage
from proxy.pricing.catalog import PriceCatalog
from proxy.settings import PriceOverride, UpstreamKind

OPENAI_URL = "https://api.openai.com/v1"
AZURE_URL = "https://acme.openai.azure.com/openai"
# After 2026-10-14, from when genai-prices bundles tier and batch prices.
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
# Before genai-prices' tier (2026-10-12) and batch (2026-10-14) prices start.
BEFORE_VARIANTS = datetime(2026, 9, 1, 12, tzinfo=UTC)

_BARE = PriceCatalog({})


def price(
    usage: Usage,
    model: str,
    *,
    overrides: Mapping[str, PriceOverride] | None = None,
    kind: UpstreamKind = "openai",
    base_url: str = OPENAI_URL,
    at: datetime = NOW,
    service_tier: str | None = None,
    batch: bool = False,
) -> Price | None:
    catalog = _BARE if overrides is None else PriceCatalog(overrides)
    return catalog.price(
        usage,
        model=model,
        upstream_kind=kind,
        upstream_base_url=base_url,
        at=at,
        service_tier=service_tier,
        batch=batch,
    )


def known(found: Price | None) -> Price:
    """`found`, which the test expects to be a known price."""
    assert found is not None
    return found


def per_million(per_thousand: str) -> Decimal:
    """A price quoted per 1K tokens, as the config takes it: per 1M tokens."""
    return Decimal(per_thousand) * 1000
