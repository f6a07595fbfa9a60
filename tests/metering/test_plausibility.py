"""A usage report that cannot be true is set aside: the call is metered by its estimate, flagged."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import orjson
import pytest
from prometheus_client import Counter

from proxy.metering import prompt_tokens, tokens
from proxy.metering.batches import TrackedBatch
from proxy.metering.exchange import Exchange
from proxy.metering.plausibility import (
    MAX_AUDIO_SECONDS_PER_CALL,
    MAX_IMAGES_PER_CALL,
    MAX_TOKENS_PER_CALL,
)
from proxy.metering.settle import Settler
from proxy.metering.tap import ResponseTap
from proxy.metering.usage import UsageRecord
from proxy.pricing.catalog import PriceCatalog
from proxy.settings import ResolvedUpstream, UpstreamConfig
from proxy.sinks import Publisher
from proxy.upstream.routing import Upstream
from tests.support.clock import START, FakeClock
from tests.support.records import RecordCollector

HI = [{"role": "user", "content": "Hi"}]
ANSWER = "Hello there."
FAIR = {
    "prompt_tokens": 12,
    "completion_tokens": 6,
    "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0},
}
UPSTREAM = Upstream.from_settings(
    ResolvedUpstream(
        config=UpstreamConfig(name="hostile", base_url="http://127.0.0.1:9/v1"), api_key=None
    )
)


def settler(records: RecordCollector, clock: FakeClock | None = None) -> Settler:
    errors = Counter("sink_errors", "failed sinks", ["sink"], registry=None)
    return Settler(PriceCatalog({}), Publisher([records], errors), clock or FakeClock(START))


def answered(document: dict[str, Any]) -> ResponseTap:
    """A tap that relayed this JSON answer."""
    tap = ResponseTap(strip_added_usage=False)
    tap.start(200, [(b"content-type", b"application/json")])
    tap.feed(orjson.dumps(document))
    tap.finish()
    return tap


def chat_answer(usage: Any) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": ANSWER}}], "usage": usage}


def settle(
    family: str, path: str, model: str, request: dict[str, Any], answer: dict[str, Any]
) -> UsageRecord:
    records = RecordCollector()
    exchange = Exchange(
        created_at=START,
        path=path,
        family=family,
        model=model,
        request=request,
        upstream=UPSTREAM,
        tap=answered(answer),
        status="200",
    )
    return settler(records).settle(exchange)


def settle_chat(usage: Any) -> UsageRecord:
    return settle("chat", "chat/completions", "gpt-4o", {"messages": HI}, chat_answer(usage))


CHAT_ESTIMATE = (prompt_tokens.count_chat_prompt("gpt-4o", HI), tokens.count_text("gpt-4o", ANSWER))


def test_a_plausible_report_is_taken_as_it_is() -> None:
    usage = settle_chat(FAIR).usage
    assert (usage.input_tokens, usage.cached_input_tokens) == (12, 2)
    assert (usage.output_tokens, usage.reasoning_tokens, usage.estimated) == (6, 3, False)


def test_absent_and_null_details_count_as_none() -> None:
    usage = settle_chat(
        {**FAIR, "prompt_tokens_details": None, "completion_tokens_details": {}}
    ).usage
    assert (usage.input_tokens, usage.cached_input_tokens, usage.estimated) == (12, 0, False)


@pytest.mark.parametrize(
    "usage",
    [
        {**FAIR, "prompt_tokens": -1_000_000},
        {**FAIR, "completion_tokens": -1},
        {**FAIR, "prompt_tokens": 12.5},
        {**FAIR, "prompt_tokens": 12.0},
        {**FAIR, "prompt_tokens": "12"},
        {**FAIR, "prompt_tokens": True},
        {**FAIR, "completion_tokens": [6]},
        {**FAIR, "prompt_tokens": MAX_TOKENS_PER_CALL + 1},
        {**FAIR, "prompt_tokens_details": {"cached_tokens": -5}},
        {**FAIR, "prompt_tokens_details": "cached"},
    ],
    ids=[
        "negative input",
        "negative output",
        "fraction",
        "float",
        "string",
        "boolean",
        "list",
        "absurd",
        "negative part",
        "details not an object",
    ],
)
def test_a_count_that_is_not_a_whole_number_within_bounds_gives_way_to_the_estimate(
    usage: dict[str, Any],
) -> None:
    recorded = settle_chat(usage).usage
    assert (recorded.input_tokens, recorded.output_tokens) == CHAT_ESTIMATE and recorded.estimated


@pytest.mark.parametrize(
    "usage",
    [
        {**FAIR, "prompt_tokens_details": {"cached_tokens": 13}},
        {**FAIR, "prompt_tokens_details": {"audio_tokens": 13}},
        {**FAIR, "completion_tokens_details": {"reasoning_tokens": 7}},
        {**FAIR, "completion_tokens_details": {"audio_tokens": 7}},
        {**FAIR, "completion_tokens_details": {"rejected_prediction_tokens": 7}},
    ],
    ids=["cached", "audio input", "reasoning", "audio output", "rejected prediction"],
)
def test_a_part_larger_than_its_whole_gives_way_to_the_estimate(usage: dict[str, Any]) -> None:
    recorded = settle_chat(usage).usage
    assert (recorded.input_tokens, recorded.output_tokens) == CHAT_ESTIMATE and recorded.estimated


def test_an_implausible_responses_report_gives_way_to_the_estimate() -> None:
    answer = {
        "output": [{"type": "message", "content": [{"type": "output_text", "text": ANSWER}]}],
        "usage": {"input_tokens": 10, "output_tokens": 2, "output_tokens_details": {}},
    }
    answer["usage"]["input_tokens_details"] = {"cached_tokens": 11}
    usage = settle("responses", "responses", "gpt-4o", {"input": "Hi"}, answer).usage
    assert usage.estimated
    assert usage.input_tokens == prompt_tokens.count_responses_input("gpt-4o", None, "Hi")


def test_an_implausible_embeddings_report_gives_way_to_the_estimate() -> None:
    answer = {"data": [], "usage": {"prompt_tokens": -7, "total_tokens": -7}}
    request = {"input": "some text to embed"}
    usage = settle("embeddings", "embeddings", "text-embedding-3-small", request, answer).usage
    assert usage.estimated
    assert usage.input_tokens == tokens.count_text("text-embedding-3-small", request["input"])


def test_an_implausible_completions_report_gives_way_to_the_estimate() -> None:
    answer = {"choices": [{"text": ANSWER}], "usage": {"prompt_tokens": "1"}}
    request = {"prompt": "Hi"}
    usage = settle("completions", "completions", "gpt-3.5-turbo-instruct", request, answer).usage
    assert usage.estimated
    assert usage.output_tokens == tokens.count_text("gpt-3.5-turbo-instruct", ANSWER)


def test_more_images_than_any_call_asks_for_give_way_to_the_asked_number() -> None:
    answer = {"data": [{"url": "https://images.example/x.png"}] * (MAX_IMAGES_PER_CALL + 1)}
    request = {"n": 2, "size": "1024x1024"}
    usage = settle("images", "images/generations", "dall-e-3", request, answer).usage
    assert (usage.images, usage.image_size, usage.estimated) == (2, "1024x1024", True)


@pytest.mark.parametrize(
    "seconds",
    [-9, "9", True, float(MAX_AUDIO_SECONDS_PER_CALL + 1)],
    ids=["negative", "string", "boolean", "absurd"],
)
def test_an_implausible_audio_duration_is_not_metered(seconds: Any) -> None:
    answer = {"text": "hi", "usage": {"type": "duration", "seconds": seconds}}
    usage = settle("audio", "audio/transcriptions", "whisper-1", {}, answer).usage
    assert usage.audio_seconds == 0 and usage.estimated


def test_a_fractional_audio_duration_is_plausible() -> None:
    answer = {"text": "hi", "usage": {"type": "duration", "seconds": 9.5}}
    usage = settle("audio", "audio/transcriptions", "whisper-1", {}, answer).usage
    assert (usage.audio_seconds, usage.estimated) == (Decimal("9.5"), False)


def test_implausible_speech_usage_gives_way_to_the_characters_of_its_input() -> None:
    answer = {"usage": {"input_tokens": -3, "output_tokens": 10}}
    request = {"input": "Say this."}
    usage = settle("audio", "audio/speech", "gpt-4o-mini-tts", request, answer).usage
    assert (usage.input_characters, usage.input_tokens, usage.estimated) == (9, 0, True)


def test_an_implausible_batch_line_is_metered_by_the_estimate_of_its_answer() -> None:
    records = RecordCollector()
    batch = TrackedBatch("batch_x", "search", "chat/completions", "chat")
    body = {**chat_answer({**FAIR, "prompt_tokens": -1_000_000}), "model": "gpt-4o"}
    line = {"id": "batch_req_1", "response": {"status_code": 200, "body": body}}

    record = settler(records).settle_batch_line(batch, UPSTREAM, line)

    # A batch line holds no request: only the reply priming of the prompt is counted.
    assert record is not None and record.usage.estimated
    assert record.usage.input_tokens == prompt_tokens.count_chat_prompt("gpt-4o", None)
    assert record.usage.output_tokens == tokens.count_text("gpt-4o", ANSWER)


def test_implausible_reports_are_warned_of_once_a_minute_per_upstream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(START)
    settling = settler(RecordCollector(), clock)
    negative = chat_answer({**FAIR, "prompt_tokens": -1})

    def settle_one() -> None:
        settling.settle(
            Exchange(
                created_at=START,
                path="chat/completions",
                family="chat",
                model="gpt-4o",
                request={"messages": HI},
                upstream=UPSTREAM,
                tap=answered(negative),
                status="200",
            )
        )

    with caplog.at_level(logging.WARNING, logger="proxy.metering.plausibility"):
        for _ in range(50):
            settle_one()
        clock.advance(minutes=1)
        settle_one()

    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert "'hostile'" in warnings[0] and "-1 input tokens" in warnings[0]
    assert "49 more such reports" in warnings[1]
