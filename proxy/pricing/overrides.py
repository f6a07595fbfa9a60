"""Config price overrides: `[prices."MODEL"]` entries, matched by exact name, then by glob.

A key with `*`, `?` or `[` is a glob pattern (`ft:gpt-4o-mini-*`); patterns are tried in the
config's order and the first match wins. An override is the model's whole price: a quantity the
call used that the entry has no price for makes the price unknown (None), never $0; write
`output = 0` to say a quantity is free. Token prices are USD per million: `cached_input` defaults
to `input`, `reasoning` and `audio_output` to `output`, `audio_input` to `input`. An override is
the standard price: service tiers do not change it, and the catalog applies the Batch API
discount on top of it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache

from proxy.metering.usage import Price
from proxy.pricing.quantities import Quantities
from proxy.pricing.sources import PricedCall, Quote
from proxy.settings import PriceOverride

MILLION = Decimal(1_000_000)
# Model names come from clients; bound the memo of names seen.
_MATCH_CACHE_SIZE = 4096


class ConfigPrices:
    """The price source for `[prices."MODEL"]` overrides."""

    def __init__(self, overrides: Mapping[str, PriceOverride]) -> None:
        self._exact = dict(overrides)
        self._patterns = tuple(
            (re.compile(fnmatch.translate(name)), name)
            for name in overrides
            if any(mark in name for mark in "*?[")
        )
        self._match = lru_cache(maxsize=_MATCH_CACHE_SIZE)(self._find)

    def quote(self, call: PricedCall) -> Quote | None:
        name = self._match(call.model)
        if name is None:
            return None
        cost = override_cost(self._exact[name], call.quantities)
        return None if cost is None else Quote(Price(cost, f"config:{name}"))

    def _find(self, model: str) -> str | None:
        if model in self._exact:
            return model
        return next((name for pattern, name in self._patterns if pattern.match(model)), None)


def override_cost(override: PriceOverride, quantities: Quantities) -> Decimal | None:
    """The cost of `quantities` at `override`'s prices; None if a used quantity has no price."""
    q = quantities
    per_million = [
        (q.text_input + q.image_input, override.input),
        (q.audio_input, _first(override.audio_input, override.input)),
        (q.cached_input, _first(override.cached_input, override.input)),
        (q.text_output + q.image_output, override.output),
        (q.reasoning_output, _first(override.reasoning, override.output)),
        (q.audio_output, _first(override.audio_output, override.output)),
        (q.characters, override.per_million_characters),
    ]
    charges = [(Decimal(count) / MILLION, rate) for count, rate in per_million]
    charges.append((Decimal(q.images), override.per_image))
    charges.append((q.audio_seconds, override.per_second))
    cost = Decimal(0)
    for count, rate in charges:
        if not count:
            continue
        if rate is None:
            return None
        cost += count * rate
    return cost


def _first(*rates: Decimal | None) -> Decimal | None:
    return next((rate for rate in rates if rate is not None), None)
