"""Prices the bundled genai-prices data lacks: DALL-E 2 and DALL-E 3, per image by size and quality.

OpenAI's published per-image prices (openai.com/api/pricing): DALL-E 2 $0.016 (256x256), $0.018
(512x512), $0.020 (1024x1024); DALL-E 3 standard $0.040 (1024x1024), $0.080 (1024x1792,
1792x1024), HD $0.080 (1024x1024), $0.120 (1024x1792, 1792x1024). When the request named no size
or quality, OpenAI's defaults apply: 1024x1024, standard. An unknown size or quality has no price.
These are OpenAI's prices, so they serve OpenAI and Azure OpenAI upstreams only.
"""

from __future__ import annotations

from decimal import Decimal

from proxy.metering.usage import Price
from proxy.pricing.sources import PricedCall, Quote

DEFAULT_SIZE = "1024x1024"
DEFAULT_QUALITY = "standard"

# (model, size, quality) -> USD per image.
PER_IMAGE: dict[tuple[str, str, str], Decimal] = {
    ("dall-e-2", "256x256", "standard"): Decimal("0.016"),
    ("dall-e-2", "512x512", "standard"): Decimal("0.018"),
    ("dall-e-2", "1024x1024", "standard"): Decimal("0.020"),
    ("dall-e-3", "1024x1024", "standard"): Decimal("0.040"),
    ("dall-e-3", "1024x1792", "standard"): Decimal("0.080"),
    ("dall-e-3", "1792x1024", "standard"): Decimal("0.080"),
    ("dall-e-3", "1024x1024", "hd"): Decimal("0.080"),
    ("dall-e-3", "1024x1792", "hd"): Decimal("0.120"),
    ("dall-e-3", "1792x1024", "hd"): Decimal("0.120"),
}


class BuiltinPrices:
    """The price source for the built-in per-image table."""

    def quote(self, call: PricedCall) -> Quote | None:
        if call.upstream_kind == "openai-compatible":
            return None
        size = call.image_size or DEFAULT_SIZE
        quality = call.image_quality or DEFAULT_QUALITY
        per_image = PER_IMAGE.get((call.model, size, quality))
        if per_image is None:
            return None
        # DALL-E 2 has one quality, so the entry names only the size.
        detail = size if call.model == "dall-e-2" else f"{size}/{quality}"
        return Quote(Price(call.quantities.images * per_image, f"builtin:{call.model}/{detail}"))
