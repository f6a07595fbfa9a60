"""genai-prices' bundled data as a price source, fast enough for the request path.

Only the data shipped in the package is used. This source keeps its own `DataSnapshot` of
`genai_prices.data.providers`: `UpdatePrices` (opt-in; it fetches from GitHub and swaps the
process-wide snapshot that `calc_price` reads) is never started here and would not change these
prices if something else in the process started it. Nothing here touches the network.

Provider by upstream kind: `openai` uses genai-prices' `openai` provider; `azure` its `azure`
provider, which has Azure's own entries and falls back to OpenAI's prices for OpenAI model names
(Azure's global deployments cost the same); `openai-compatible` is matched by base URL
(`provider_api_url`: Groq, Together, Fireworks, ...), so a self-hosted URL finds nothing.

The request time selects historic prices, the response's `service_tier` selects tier prices, and
`processing=batch` marks a Batch API call (genai-prices' batch variants, bundled from 2026-10-14).
genai-prices ignores that context for a model found through a fallback provider (Azure -> OpenAI),
which then costs the standard price.

Speed: genai-prices' `calc_price` takes about 100 us, mostly re-validating the price table. Token
and character prices are affine in the counts within one tier band (tiers switch rates by total
input tokens), so for each resolved price and band the cost of one unit of each quantity is asked
of genai-prices once and cached; a call then costs a multiply-add per quantity. Calls with audio
seconds always go through genai-prices: duration prices can carry minimums (Groq's 10 seconds).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter

from genai_prices.data import providers
from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import (
    ModelInfo,
    ModelPrice,
    PriceVariant,
    Provider,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)
from genai_prices.types import Usage as GenaiUsage

from proxy.metering.usage import Price
from proxy.pricing.quantities import Quantities
from proxy.pricing.sources import PricedCall, Quote
from proxy.settings import UpstreamKind

PROVIDER_BY_KIND: dict[UpstreamKind, str | None] = {
    "openai": "openai",
    "azure": "azure",
    "openai-compatible": None,  # matched by base URL
}
# The quantities priced by the cached per-unit rates; the first is uncached text input.
RATED_FIELDS = (
    "text_input",
    "cached_text_input",
    "audio_input",
    "cached_audio_input",
    "image_input",
    "cached_image_input",
    "text_output",
    "reasoning_output",
    "audio_output",
    "image_output",
    "characters",
)
_counts = attrgetter(*RATED_FIELDS)
# Model names come from clients; bound the memo of names seen.
_LOOKUP_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class _Model:
    provider: Provider
    info: ModelInfo
    entry: str
    # genai-prices applies price variants only to a provider's own models, not to fallbacks.
    takes_context: bool


@dataclass(frozen=True, slots=True)
class _Resolved:
    """One model's price as selected by date and variants."""

    price: ModelPrice
    tier_starts: tuple[int, ...]
    effective_from: datetime | None
    entry_suffix: str
    batch_priced: bool


@dataclass(frozen=True, slots=True)
class _Rates:
    """Cost = constant + sum(rate * count) over `RATED_FIELDS`, within one tier band."""

    constant: Decimal
    per_unit: tuple[Decimal, ...]


_SelectionKey = tuple[int, int, tuple[int, ...]]


class BundledPrices:
    """The price source for genai-prices' bundled data."""

    def __init__(self) -> None:
        self._snapshot = DataSnapshot(providers=providers, from_auto_update=False)
        self._owner = {
            id(model): provider.id for provider in providers for model in provider.models
        }
        self._lookup = lru_cache(maxsize=_LOOKUP_CACHE_SIZE)(self._find)
        self._resolved: dict[_SelectionKey, _Resolved] = {}
        self._rates: dict[tuple[_SelectionKey, int], _Rates] = {}

    def quote(self, call: PricedCall) -> Quote | None:
        model = self._lookup(call.model, call.upstream_kind, call.upstream_base_url)
        if model is None:
            return None
        context = _context(call) if model.takes_context else None
        key = _selection_key(model.info, call.at, context)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = self._resolved[key] = _resolve(model.info, call.at, context, key)
        quantities = call.quantities
        if quantities.audio_seconds:
            cost = model.info.calc_price(
                _genai_usage(quantities),
                model.provider,
                genai_request_timestamp=call.at,
                price_context=context,
            ).total_price
        else:
            band = _band_floor(resolved.tier_starts, quantities.input_tokens)
            rates = self._rates.get((key, band))
            if rates is None:
                rates = self._rates[key, band] = _rates(resolved.price, band)
            cost = rates.constant
            for rate, count in zip(rates.per_unit, _counts(quantities), strict=True):
                if count:
                    cost += rate * count
        price = Price(cost, model.entry + resolved.entry_suffix, resolved.effective_from)
        return Quote(price, batch_priced=resolved.batch_priced)

    def _find(self, model: str, kind: UpstreamKind, base_url: str) -> _Model | None:
        provider_id = PROVIDER_BY_KIND[kind]
        api_url = None if provider_id else base_url
        try:
            provider, info = self._snapshot.find_provider_model(model, None, provider_id, api_url)
        except LookupError:
            return None
        own = any(candidate is info for candidate in provider.models)
        return _Model(provider, info, f"genai-prices:{self._owner[id(info)]}/{info.id}", own)


def _context(call: PricedCall) -> dict[str, str] | None:
    context: dict[str, str] = {}
    if call.service_tier:
        context["service_tier"] = call.service_tier
    if call.batch:
        context["processing"] = "batch"
    return context or None


def _active(constraint: StartDateConstraint | TimeOfDateConstraint | None, at: datetime) -> bool:
    return constraint is None or constraint.active(at)


def _selection_key(info: ModelInfo, at: datetime, context: dict[str, str] | None) -> _SelectionKey:
    """Which dated price and which variants apply, chosen as `ModelInfo.get_prices` chooses."""
    dated = 0
    if isinstance(info.prices, list):
        # The last active dated price wins; the first one when none is active.
        dated = next(
            (
                i
                for i in reversed(range(len(info.prices)))
                if _active(info.prices[i].constraint, at)
            ),
            0,
        )
    variants: tuple[int, ...] = ()
    if context:
        variants = tuple(
            i
            for i, variant in enumerate(info.price_variants or ())
            if _active(variant.constraint, at)
            and all(context.get(name) == value for name, value in variant.when.items())
        )
    return id(info), dated, variants


def _resolve(
    info: ModelInfo, at: datetime, context: dict[str, str] | None, key: _SelectionKey
) -> _Resolved:
    _, dated, variant_indexes = key
    price = info.get_prices(at, context)
    tier_starts = sorted(
        {
            tier.start
            for value in price.__dict__.values()
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        }
    )
    variants = [info.price_variants[i] for i in variant_indexes] if info.price_variants else []
    applied = [variant for variant in variants if _sets_prices(variant)]
    constraints = [variant.constraint for variant in applied]
    if isinstance(info.prices, list):
        constraints.append(info.prices[dated].constraint)
    starts = [c.start_date for c in constraints if isinstance(c, StartDateConstraint)]
    return _Resolved(
        price=price,
        tier_starts=tuple(tier_starts),
        effective_from=_midnight_utc(max(starts)) if starts else None,
        entry_suffix="".join(f"@{value}" for variant in applied for value in variant.when.values()),
        batch_priced=any(variant.when.get("processing") == "batch" for variant in applied),
    )


def _sets_prices(variant: PriceVariant) -> bool:
    # The `service_tier=default` variant is empty: it selects the standard prices.
    return any(value is not None for value in variant.prices.__dict__.values())


def _midnight_utc(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _band_floor(tier_starts: tuple[int, ...], input_tokens: int) -> int:
    """The fewest input tokens that price like `input_tokens`: a tier applies above its start."""
    return max((start + 1 for start in tier_starts if input_tokens > start), default=0)


def _rates(price: ModelPrice, band_floor: int) -> _Rates:
    base = Quantities(text_input=band_floor)
    base_cost = _genai_cost(price, base)
    per_unit = tuple(
        _genai_cost(price, dataclasses.replace(base, **{name: getattr(base, name) + 1})) - base_cost
        for name in RATED_FIELDS
    )
    # `base` holds `band_floor` uncached text input tokens, priced at the first rate.
    return _Rates(constant=base_cost - per_unit[0] * band_floor, per_unit=per_unit)


def _genai_cost(price: ModelPrice, quantities: Quantities) -> Decimal:
    return price.calc_price(_genai_usage(quantities))["total_price"]


def _genai_usage(q: Quantities) -> GenaiUsage:
    """genai-prices' usage for `q`: totals that include their parts, as genai-prices expects."""
    return GenaiUsage(
        input_tokens=q.input_tokens,
        cache_read_tokens=q.cached_input,
        input_audio_tokens=q.audio_input + q.cached_audio_input,
        cache_audio_read_tokens=q.cached_audio_input,
        input_image_tokens=q.image_input + q.cached_image_input,
        cache_image_read_tokens=q.cached_image_input,
        output_tokens=q.output_tokens,
        output_reasoning_tokens=q.reasoning_output,
        output_audio_tokens=q.audio_output,
        output_image_tokens=q.image_output,
        # Reasoning tokens are text: without these, a model pricing both would need them.
        output_audio_reasoning_tokens=0,
        output_image_reasoning_tokens=0,
        input_characters=q.characters,
        # Transcription audio is input audio; genai-prices prices either key.
        audio_seconds=q.audio_seconds,
        input_audio_seconds=q.audio_seconds,
    )
