"""The catalog's answer when no source knows the model."""

from __future__ import annotations

from decimal import Decimal

from proxy.metering.usage import Usage
from tests.pricing.calls import price


def test_unknown_model_has_no_price_rather_than_zero() -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000, images=1, audio_seconds=Decimal(1))

    assert price(usage, "no-such-model-2031") is None


def test_unknown_model_stays_unknown_when_asked_again() -> None:
    usage = Usage(input_tokens=1000)

    assert [price(usage, "no-such-model-2031", batch=True) for _ in range(2)] == [None, None]
