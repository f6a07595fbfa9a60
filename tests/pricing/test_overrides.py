"""Config overrides: matched by name or glob, and priced per quantity with sensible defaults."""

from __future__ import annotations

from decimal import Decimal

from proxy.metering.usage import Usage
from proxy.settings import PriceOverride
from tests.pricing.calls import known, price

MILLION = 1_000_000
SELF_HOSTED_URL = "http://127.0.0.1:8000/v1"


def test_override_beats_the_bundled_price() -> None:
    overrides = {"gpt-4o": PriceOverride(input=Decimal(1), output=Decimal(1))}

    found = known(price(Usage(input_tokens=MILLION), "gpt-4o", overrides=overrides))

    assert found.cost_usd == Decimal(1)
    assert found.entry == "config:gpt-4o"


def test_override_prices_a_self_hosted_model() -> None:
    overrides = {"llama-3.1-70b": PriceOverride(input=Decimal("0.2"), output=Decimal("0.4"))}
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = price(
        usage,
        "llama-3.1-70b",
        overrides=overrides,
        kind="openai-compatible",
        base_url=SELF_HOSTED_URL,
    )

    assert known(found).cost_usd == Decimal("0.6")


def test_cached_input_defaults_to_the_input_price() -> None:
    overrides = {"m": PriceOverride(input=Decimal(2), output=Decimal(8))}
    usage = Usage(input_tokens=MILLION, cached_input_tokens=MILLION // 2)

    assert known(price(usage, "m", overrides=overrides)).cost_usd == Decimal(2)


def test_cached_input_price_applies_to_cached_tokens_only() -> None:
    overrides = {
        "m": PriceOverride(input=Decimal(2), cached_input=Decimal("0.5"), output=Decimal(8))
    }
    usage = Usage(input_tokens=MILLION, cached_input_tokens=MILLION // 2)

    assert known(price(usage, "m", overrides=overrides)).cost_usd == Decimal("1.25")


def test_reasoning_price_applies_to_reasoning_tokens_only() -> None:
    overrides = {"m": PriceOverride(input=Decimal(1), output=Decimal(4), reasoning=Decimal(2))}
    usage = Usage(output_tokens=MILLION, reasoning_tokens=MILLION // 4)

    assert known(price(usage, "m", overrides=overrides)).cost_usd == Decimal("3.5")


def test_audio_prices_apply_to_audio_tokens_only() -> None:
    overrides = {
        "m": PriceOverride(
            input=Decimal(1), output=Decimal(2), audio_input=Decimal(10), audio_output=Decimal(20)
        )
    }
    usage = Usage(
        input_tokens=MILLION,
        audio_input_tokens=MILLION // 2,
        output_tokens=MILLION,
        audio_output_tokens=MILLION // 2,
    )

    assert known(price(usage, "m", overrides=overrides)).cost_usd == Decimal("16.5")


def test_used_quantity_without_a_price_makes_the_price_unknown() -> None:
    overrides = {"m": PriceOverride(input=Decimal(1))}
    usage = Usage(input_tokens=10, output_tokens=10)

    assert price(usage, "m", overrides=overrides) is None


def test_zero_price_makes_a_quantity_free() -> None:
    overrides = {"m": PriceOverride(input=Decimal(1), output=Decimal(0))}
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    assert known(price(usage, "m", overrides=overrides)).cost_usd == Decimal(1)


def test_per_image_second_and_character_prices() -> None:
    overrides = {
        "m": PriceOverride(
            per_image=Decimal("0.05"),
            per_second=Decimal("0.0001"),
            per_million_characters=Decimal(10),
        )
    }
    usage = Usage(images=2, audio_seconds=Decimal("30.5"), input_characters=1000)

    assert known(price(usage, "m", overrides=overrides)).cost_usd == Decimal("0.11305")


def test_glob_override_prices_matching_models() -> None:
    overrides = {"ft:gpt-4.1-mini-*": PriceOverride(input=Decimal("0.8"), output=Decimal("3.2"))}
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "ft:gpt-4.1-mini-2025-04-14:acme::x1", overrides=overrides))

    assert found.cost_usd == Decimal(4)
    assert found.entry == "config:ft:gpt-4.1-mini-*"


def test_exact_name_beats_a_glob_listed_before_it() -> None:
    overrides = {
        "gpt-*": PriceOverride(input=Decimal(1)),
        "gpt-4o": PriceOverride(input=Decimal(2)),
    }

    found = known(price(Usage(input_tokens=MILLION), "gpt-4o", overrides=overrides))

    assert found.entry == "config:gpt-4o"


def test_first_matching_glob_in_config_order_wins() -> None:
    overrides = {
        "llama-*": PriceOverride(input=Decimal(1)),
        "llama-3*": PriceOverride(input=Decimal(2)),
    }

    found = known(price(Usage(input_tokens=MILLION), "llama-3.1-8b", overrides=overrides))

    assert found.entry == "config:llama-*"


def test_service_tier_does_not_change_an_override() -> None:
    overrides = {"gpt-5": PriceOverride(input=Decimal(1), output=Decimal(1))}
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "gpt-5", overrides=overrides, service_tier="flex"))

    assert found.cost_usd == Decimal(2)
    assert found.entry == "config:gpt-5"


def test_batch_call_on_a_self_hosted_override_costs_the_override_price() -> None:
    overrides = {"llama-3.1-70b": PriceOverride(input=Decimal(1), output=Decimal(1))}
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = price(
        usage,
        "llama-3.1-70b",
        overrides=overrides,
        kind="openai-compatible",
        base_url=SELF_HOSTED_URL,
        batch=True,
    )

    assert known(found).cost_usd == Decimal(2)
