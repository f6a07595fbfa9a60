"""Prices from genai-prices' bundled data: conventions, history, tiers, batch and providers."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest
from genai_prices import data_snapshot
from genai_prices.data_snapshot import DataSnapshot

from proxy.metering.usage import Usage
from proxy.pricing.catalog import PriceCatalog
from proxy.settings import PriceOverride
from tests.pricing.calls import AZURE_URL, BEFORE_VARIANTS, NOW, OPENAI_URL, known, price

MILLION = 1_000_000


def test_cached_input_tokens_cost_the_cache_read_price_and_are_not_also_input() -> None:
    # gpt-4o: $2.50 input, $1.25 cached input per 1M.
    usage = Usage(input_tokens=MILLION, cached_input_tokens=400_000)

    found = known(price(usage, "gpt-4o"))

    assert found.cost_usd == Decimal("2.00")  # 600K x $2.50 + 400K x $1.25, per 1M
    assert found.entry == "genai-prices:openai/gpt-4o"


def test_reasoning_tokens_are_charged_once_as_output() -> None:
    # o3 since 2025-06-10: $8 output per 1M; reasoning tokens are part of output_tokens.
    usage = Usage(output_tokens=MILLION, reasoning_tokens=800_000)

    assert known(price(usage, "o3")).cost_usd == Decimal(8)


def test_audio_tokens_cost_audio_prices_and_are_not_also_text() -> None:
    # gpt-audio: $2.50 text / $32 audio input, $10 text / $64 audio output per 1M.
    usage = Usage(
        input_tokens=1000, audio_input_tokens=400, output_tokens=1000, audio_output_tokens=600
    )

    found = known(price(usage, "gpt-audio"))

    assert found.cost_usd == (600 * Decimal("2.5") + 400 * 32 + 400 * 10 + 600 * 64) / MILLION


def test_mapping_to_genai_prices_usage_matches_its_own_calc_price() -> None:
    # gpt-realtime prices cached, audio, cached audio, image and cached image input apart.
    usage = Usage(
        input_tokens=10_000,
        cached_input_tokens=6_000,
        audio_input_tokens=3_000,
        image_input_tokens=2_000,
        output_tokens=5_000,
        audio_output_tokens=4_000,
    )
    # Cached tokens are taken as text first (5,000 text tokens), then audio.
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=10_000,
            cache_read_tokens=6_000,
            input_audio_tokens=3_000,
            cache_audio_read_tokens=1_000,
            input_image_tokens=2_000,
            cache_image_read_tokens=0,
            output_tokens=5_000,
            output_audio_tokens=4_000,
        ),
        "gpt-realtime",
        provider_id="openai",
        genai_request_timestamp=NOW,
    )

    assert known(price(usage, "gpt-realtime")).cost_usd == expected.total_price


@pytest.mark.parametrize(
    ("model", "input_tokens", "service_tier", "batch"),
    [
        ("gpt-4o", 5_000, None, False),
        ("gpt-5", 5_000, "priority", False),
        ("gpt-5.4", 300_000, None, False),  # above the 272K-token tier
        ("gpt-5.4", 300_000, "flex", False),
        ("gpt-image-1", 5_000, None, True),
        ("o3", 5_000, "flex", False),
    ],
)
def test_cached_unit_rates_give_genai_prices_own_result(
    model: str, input_tokens: int, service_tier: str | None, batch: bool
) -> None:
    usage = Usage(
        input_tokens=input_tokens,
        cached_input_tokens=1_234,
        output_tokens=4_321,
        reasoning_tokens=1_000,
    )
    context = {"service_tier": service_tier} if service_tier else {}
    if batch:
        context["processing"] = "batch"
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=input_tokens,
            cache_read_tokens=1_234,
            output_tokens=4_321,
            output_reasoning_tokens=1_000,
        ),
        model,
        provider_id="openai",
        genai_request_timestamp=NOW,
        price_context=context or None,
    )

    found = price(usage, model, service_tier=service_tier, batch=batch)

    assert known(found).cost_usd == expected.total_price


def test_price_before_a_price_change_is_the_old_price() -> None:
    # o3 cost $10 / $40 per 1M until 2025-06-10.
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "o3", at=datetime(2025, 6, 9, 23, tzinfo=UTC)))

    assert found.cost_usd == Decimal(50)
    assert found.effective_from is None


def test_price_after_a_price_change_is_the_new_price_with_its_start_date() -> None:
    # o3 costs $2 / $8 per 1M from 2025-06-10.
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "o3", at=datetime(2025, 6, 10, 1, tzinfo=UTC)))

    assert found.cost_usd == Decimal(10)
    assert found.effective_from == datetime(2025, 6, 10, tzinfo=UTC)


def test_flex_tier_costs_the_flex_price() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "gpt-5", service_tier="flex"))

    assert found.cost_usd == Decimal("5.625")  # $0.625 + $5, against $1.25 + $10 standard
    assert found.entry == "genai-prices:openai/gpt-5@flex"
    assert found.effective_from == datetime(2026, 10, 12, tzinfo=UTC)


def test_priority_tier_costs_the_priority_price() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "gpt-5", service_tier="priority"))

    assert found.cost_usd == Decimal("22.5")
    assert found.entry == "genai-prices:openai/gpt-5@priority"


def test_default_tier_costs_the_standard_price() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "gpt-5", service_tier="default"))

    assert found.cost_usd == Decimal("11.25")
    assert found.entry == "genai-prices:openai/gpt-5"


def test_tier_before_genai_prices_has_tier_rates_costs_the_standard_price() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "gpt-5", service_tier="flex", at=BEFORE_VARIANTS))

    assert found.cost_usd == Decimal("11.25")
    assert found.entry == "genai-prices:openai/gpt-5"


def test_batch_call_costs_genai_prices_batch_rate_with_its_start_date() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "gpt-4o", batch=True))

    assert found.cost_usd == Decimal("6.25")
    assert found.entry == "genai-prices:openai/gpt-4o@batch"
    assert found.effective_from == datetime(2026, 10, 14, tzinfo=UTC)


def test_batch_call_of_a_model_without_batch_rate_gets_openai_half_price() -> None:
    # genai-prices has no batch rate for fine-tuned gpt-4o ($3.75 / $15 per 1M).
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "ft:gpt-4o-2024-08-06:acme::abc123", batch=True))

    assert found.cost_usd == Decimal("9.375")
    assert found.entry == "genai-prices:openai/ft:gpt-4o@batch-50%"


def test_batch_call_on_another_vendor_without_batch_rate_costs_the_standard_price() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)
    groq = "https://api.groq.com/openai/v1"

    standard = price(usage, "llama-3.1-8b-instant", kind="openai-compatible", base_url=groq)
    batch = price(
        usage, "llama-3.1-8b-instant", kind="openai-compatible", base_url=groq, batch=True
    )

    assert batch == standard


def test_dated_model_name_costs_its_model_price() -> None:
    usage = Usage(input_tokens=MILLION)

    found = known(price(usage, "gpt-4o-2024-08-06"))

    assert found.cost_usd == Decimal("2.5")
    assert found.entry == "genai-prices:openai/gpt-4o"


def test_fine_tuned_model_costs_its_fine_tuned_price() -> None:
    # Fine-tuned gpt-4o-mini costs $0.30 / $1.20 per 1M, twice the base model.
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "ft:gpt-4o-mini-2024-07-18:acme:support:abc123"))

    assert found.cost_usd == Decimal("1.5")
    assert found.entry == "genai-prices:openai/ft:gpt-4o-mini"


def test_fine_tuned_model_without_a_fine_tuned_price_is_unknown_not_its_base_price() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    assert price(usage, "ft:gpt-4.1-mini-2025-04-14:acme::abc123") is None


def test_azure_upstream_prices_openai_models_at_openai_prices() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "gpt-4o", kind="azure", base_url=AZURE_URL))

    assert found.cost_usd == Decimal("12.5")
    assert found.entry == "genai-prices:openai/gpt-4o"


def test_azure_upstream_uses_azure_own_entries() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "o1", kind="azure", base_url=AZURE_URL))

    assert found.entry == "genai-prices:azure/o1"


def test_azure_batch_call_gets_openai_half_price() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(price(usage, "gpt-4o", kind="azure", base_url=AZURE_URL, batch=True))

    assert found.cost_usd == Decimal("6.25")
    assert found.entry == "genai-prices:openai/gpt-4o@batch-50%"


def test_openai_compatible_vendor_is_recognised_by_its_url() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = known(
        price(
            usage,
            "llama-3.1-8b-instant",
            kind="openai-compatible",
            base_url="https://api.groq.com/openai/v1",
        )
    )

    assert found.entry == "genai-prices:groq/llama-3.1-8b-instant"


def test_self_hosted_upstream_has_no_bundled_price() -> None:
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)

    found = price(
        usage, "gpt-oss-20b", kind="openai-compatible", base_url="http://10.0.0.7:8000/v1"
    )

    assert found is None


def test_gpt_image_prices_image_input_tokens_apart_from_text() -> None:
    # gpt-image-1: $5 text input, $10 image input, $40 output per 1M.
    usage = Usage(input_tokens=1000, image_input_tokens=600, output_tokens=4000, images=1)

    assert known(price(usage, "gpt-image-1")).cost_usd == Decimal("0.168")


def test_image_generation_output_tokens_are_priced_as_image_tokens() -> None:
    # gpt-image-1.5: $10 text output, $32 image output per 1M.
    usage = Usage(input_tokens=100, output_tokens=4000, images=1)

    assert known(price(usage, "gpt-image-1.5")).cost_usd == Decimal("0.1285")


def test_whisper_costs_0_006_dollars_a_minute_of_audio() -> None:
    found = known(price(Usage(audio_seconds=Decimal(90)), "whisper-1"))

    assert found.cost_usd == Decimal("0.009")
    assert found.entry == "genai-prices:openai/whisper-1"


@pytest.mark.parametrize(("model", "per_million"), [("tts-1", 15), ("tts-1-hd", 30)])
def test_text_to_speech_costs_per_million_input_characters(model: str, per_million: int) -> None:
    found = known(price(Usage(input_characters=2_000), model))

    assert found.cost_usd == Decimal(per_million) * 2_000 / MILLION


def test_costs_are_exact_decimals() -> None:
    one_token = Usage(input_tokens=1)

    costs = [known(price(one_token, "gpt-4o-mini")).cost_usd for _ in range(3)]

    assert all(isinstance(cost, Decimal) for cost in costs)
    assert sum(costs) == Decimal("0.00000045")


def test_prices_ignore_a_snapshot_fetched_by_update_prices() -> None:
    # What `UpdatePrices` installs process-wide; here, one that knows no model at all.
    data_snapshot.set_custom_snapshot(DataSnapshot(providers=[], from_auto_update=True))
    try:
        with pytest.raises(LookupError):
            genai_prices.calc_price(
                genai_prices.Usage(input_tokens=1), "gpt-4o", provider_id="openai"
            )
        found = PriceCatalog({}).price(
            Usage(input_tokens=MILLION),
            model="gpt-4o",
            upstream_kind="openai",
            upstream_base_url=OPENAI_URL,
            at=NOW,
        )
    finally:
        data_snapshot.set_custom_snapshot(None)

    assert known(found).cost_usd == Decimal("2.5")


def test_pricing_makes_no_network_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pricing tried to connect")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    catalog = PriceCatalog({"llama3": PriceOverride(input=Decimal(1), output=Decimal(1))})

    for model in ("gpt-4o", "whisper-1", "dall-e-3", "llama3", "no-such-model"):
        catalog.price(
            Usage(input_tokens=10, output_tokens=10, audio_seconds=Decimal(1), images=1),
            model=model,
            upstream_kind="openai",
            upstream_base_url=OPENAI_URL,
            at=NOW,
        )
