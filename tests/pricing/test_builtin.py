"""The built-in per-image table for DALL-E 2 and DALL-E 3."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proxy.metering.usage import Usage
from proxy.settings import PriceOverride
from tests.pricing.calls import AZURE_URL, known, price


@pytest.mark.parametrize(
    ("size", "quality", "per_image"),
    [
        ("1024x1024", "standard", "0.040"),
        ("1024x1792", "standard", "0.080"),
        ("1792x1024", "standard", "0.080"),
        ("1024x1024", "hd", "0.080"),
        ("1024x1792", "hd", "0.120"),
        ("1792x1024", "hd", "0.120"),
    ],
)
def test_dall_e_3_costs_per_image_by_size_and_quality(
    size: str, quality: str, per_image: str
) -> None:
    found = known(price(Usage(images=2, image_size=size, image_quality=quality), "dall-e-3"))

    assert found.cost_usd == 2 * Decimal(per_image)
    assert found.entry == f"builtin:dall-e-3/{size}/{quality}"


@pytest.mark.parametrize(
    ("size", "per_image"), [("256x256", "0.016"), ("512x512", "0.018"), ("1024x1024", "0.020")]
)
def test_dall_e_2_costs_per_image_by_size(size: str, per_image: str) -> None:
    found = known(price(Usage(images=1, image_size=size), "dall-e-2"))

    assert found.cost_usd == Decimal(per_image)


def test_dall_e_without_size_or_quality_costs_the_default_square_standard_image() -> None:
    assert known(price(Usage(images=1), "dall-e-3")).cost_usd == Decimal("0.040")
    assert known(price(Usage(images=1), "dall-e-2")).cost_usd == Decimal("0.020")


def test_dall_e_of_an_unknown_size_is_unknown() -> None:
    assert price(Usage(images=1, image_size="2048x2048"), "dall-e-3") is None


def test_dall_e_on_azure_costs_openai_prices() -> None:
    found = price(Usage(images=1), "dall-e-3", kind="azure", base_url=AZURE_URL)

    assert known(found).cost_usd == Decimal("0.040")


def test_dall_e_name_on_a_self_hosted_upstream_has_no_builtin_price() -> None:
    found = price(
        Usage(images=1), "dall-e-3", kind="openai-compatible", base_url="http://localhost:9000/v1"
    )

    assert found is None


def test_override_beats_the_builtin_price() -> None:
    overrides = {"dall-e-3": PriceOverride(per_image=Decimal("0.03"))}

    found = known(price(Usage(images=1), "dall-e-3", overrides=overrides))

    assert found.entry == "config:dall-e-3"
