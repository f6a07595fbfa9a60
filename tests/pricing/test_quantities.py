"""Splitting a call's usage into disjoint billable quantities."""

from __future__ import annotations

from proxy.metering.usage import Usage
from proxy.pricing.quantities import Quantities


def test_parts_are_taken_out_of_their_totals() -> None:
    usage = Usage(
        input_tokens=100,
        audio_input_tokens=30,
        image_input_tokens=20,
        output_tokens=50,
        reasoning_tokens=10,
        audio_output_tokens=15,
    )

    q = Quantities.of(usage)

    assert (q.text_input, q.audio_input, q.image_input) == (50, 30, 20)
    assert (q.text_output, q.reasoning_output, q.audio_output) == (25, 10, 15)
    assert (q.input_tokens, q.output_tokens) == (100, 50)


def test_cached_tokens_are_taken_as_text_before_audio() -> None:
    usage = Usage(input_tokens=100, cached_input_tokens=80, audio_input_tokens=40)

    q = Quantities.of(usage)

    assert (q.cached_text_input, q.cached_audio_input) == (60, 20)
    assert (q.text_input, q.audio_input) == (0, 20)


def test_parts_larger_than_their_total_are_capped() -> None:
    usage = Usage(input_tokens=10, cached_input_tokens=50, output_tokens=5, reasoning_tokens=9)

    q = Quantities.of(usage)

    assert (q.input_tokens, q.cached_input, q.text_input) == (10, 10, 0)
    assert (q.output_tokens, q.reasoning_output, q.text_output) == (5, 5, 0)


def test_output_tokens_of_an_image_generation_are_image_tokens() -> None:
    q = Quantities.of(Usage(input_tokens=10, output_tokens=4000, images=1))

    assert (q.image_output, q.text_output) == (4000, 0)
