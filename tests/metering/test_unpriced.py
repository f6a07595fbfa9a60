"""The unpriced-model warning: once per model, bounded in names kept and lines written."""

from __future__ import annotations

import logging

import pytest

from proxy.metering.unpriced import UnpricedModelWarnings


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_each_model_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    warnings = UnpricedModelWarnings()

    for model in ["a", "b", "a", "a", "b"]:
        warnings.note(model)

    assert warned(caplog) == [
        "no known price for model 'a': its calls are recorded unpriced",
        "no known price for model 'b': its calls are recorded unpriced",
    ]


def test_the_names_kept_are_bounded_forgetting_the_least_recent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    warnings = UnpricedModelWarnings(max_remembered=3)
    for model in ["a", "b", "c", "a", "d"]:
        warnings.note(model)
    assert warnings.remembered == 3
    caplog.clear()

    warnings.note("a")  # seen lately: still remembered
    warnings.note("b")  # the least recently seen: forgotten when "d" came, so named again

    assert warned(caplog) == ["no known price for model 'b': its calls are recorded unpriced"]


def test_past_the_rate_the_rest_are_counted_in_one_line_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks = Ticks()
    warnings = UnpricedModelWarnings(max_per_minute=2, clock=ticks)

    for number in range(5):
        warnings.note(f"m{number}")
    assert len(warned(caplog)) == 2
    ticks.now = 61.0
    warnings.note("m5")

    assert warned(caplog)[2:] == [
        "3 more models with no known price in the last minute (not named, to bound the log): "
        "their calls are recorded unpriced",
        "no known price for model 'm5': its calls are recorded unpriced",
    ]
