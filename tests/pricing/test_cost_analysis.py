"""The worked examples of the widely read cost analysis, at the prices it quotes.

Token prices are quoted there per 1K tokens and set here as config overrides, per 1M tokens.
"""

from __future__ import annotations

from decimal import Decimal

from proxy.metering.usage import Usage
from proxy.settings import PriceOverride
from tests.pricing.calls import BEFORE_VARIANTS, known, per_million, price

MILLION = 1_000_000


def test_gpt_4_one_million_tokens_each_way_costs_90_dollars() -> None:
    overrides = {"gpt-4": PriceOverride(input=per_million("0.03"), output=per_million("0.06"))}
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "gpt-4", overrides=overrides))

    assert found.cost_usd == Decimal("90.00")
    assert found.entry == "config:gpt-4"


def test_gpt_3_5_turbo_one_million_tokens_each_way_costs_3_50() -> None:
    overrides = {
        "gpt-3.5-turbo": PriceOverride(input=per_million("0.0015"), output=per_million("0.002"))
    }
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    assert known(price(usage, "gpt-3.5-turbo", overrides=overrides)).cost_usd == Decimal("3.50")


def test_gpt_4o_mini_batch_at_standard_override_prices_costs_0_75() -> None:
    # $0.075 / $0.300 per 1M are the Batch API prices: half the standard $0.15 / $0.60.
    overrides = {"gpt-4o-mini": PriceOverride(input=Decimal("0.15"), output=Decimal("0.60"))}
    usage = Usage(input_tokens=2 * MILLION, output_tokens=2 * MILLION)

    standard = known(price(usage, "gpt-4o-mini", overrides=overrides))
    batch = known(price(usage, "gpt-4o-mini", overrides=overrides, batch=True))

    assert standard.cost_usd == Decimal("1.50")
    assert batch.cost_usd == Decimal("0.75")
    assert batch.entry == "config:gpt-4o-mini@batch-50%"


def test_gpt_4o_mini_batch_at_genai_prices_batch_rate_costs_0_75() -> None:
    usage = Usage(input_tokens=2 * MILLION, output_tokens=2 * MILLION)

    found = known(price(usage, "gpt-4o-mini", batch=True))

    assert found.cost_usd == Decimal("0.75")
    assert found.entry == "genai-prices:openai/gpt-4o-mini@batch"


def test_gpt_4o_mini_batch_before_genai_prices_has_batch_rates_costs_0_75() -> None:
    usage = Usage(input_tokens=2 * MILLION, output_tokens=2 * MILLION)

    found = known(price(usage, "gpt-4o-mini", batch=True, at=BEFORE_VARIANTS))

    assert found.cost_usd == Decimal("0.75")
    assert found.entry == "genai-prices:openai/gpt-4o-mini@batch-50%"


def test_o1_mini_counts_reasoning_tokens_once_as_output_and_costs_7_50() -> None:
    overrides = {"o1-mini": PriceOverride(input=Decimal(3), output=Decimal(12))}
    usage = Usage(input_tokens=MILLION // 2, output_tokens=MILLION // 2, reasoning_tokens=300_000)

    assert known(price(usage, "o1-mini", overrides=overrides)).cost_usd == Decimal("7.50")


def test_fifty_dall_e_3_standard_square_images_one_per_call_cost_2_dollars() -> None:
    one_image = Usage(images=1, image_size="1024x1024", image_quality="standard")

    total = sum(known(price(one_image, "dall-e-3")).cost_usd for _ in range(50))

    assert total == Decimal("2.00")


def test_fifty_dall_e_3_images_in_one_usage_cost_2_dollars() -> None:
    found = known(price(Usage(images=50), "dall-e-3"))

    assert found.cost_usd == Decimal("2.00")
    assert found.entry == "builtin:dall-e-3/1024x1024/standard"


def test_fifty_dall_e_2_square_images_cost_1_dollar() -> None:
    found = known(price(Usage(images=50, image_size="1024x1024"), "dall-e-2"))

    assert found.cost_usd == Decimal("1.00")
    assert found.entry == "builtin:dall-e-2/1024x1024"
