"""Every call through the proxy settles exactly one record with what it really consumed."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from proxy.metering import prompt_tokens, tokens
from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.clock import FakeClock
from tests.support.fake_upstream import STREAM_CHUNKS, FakeUpstream
from tests.support.records import RecordCollector

ProxyToFake = tuple[FakeUpstream, str]
HI = [{"role": "user", "content": "Hi"}]


def sdk(proxy_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy_url, api_key="sk-client", max_retries=0)


def replay(name: str) -> dict[str, Any]:
    return {"extra_headers": {"x-fake-replay": name}}


def test_chat_reasoning_and_cached_tokens(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).chat.completions.create(
        model="o3-mini", messages=HI, **replay("chat-o3-mini-reasoning-cached")
    )
    record = records.only()
    assert (record.endpoint, record.model, record.status, record.upstream) == (
        "chat",
        "o3-mini",
        "200",
        "fake",
    )
    usage = record.usage
    assert (usage.input_tokens, usage.cached_input_tokens) == (1117, 1024)
    assert (usage.output_tokens, usage.reasoning_tokens) == (532, 448)
    assert not usage.estimated
    assert record.service_tier == "default"
    assert record.price is not None and record.price.cost_usd > 0


def test_chat_audio_tokens(proxy_to_fake: ProxyToFake, records: RecordCollector) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).chat.completions.create(
        model="gpt-4o-audio-preview", messages=HI, **replay("chat-gpt-4o-audio")
    )
    usage = records.only().usage
    assert (usage.input_tokens, usage.audio_input_tokens) == (42, 30)
    assert (usage.output_tokens, usage.audio_output_tokens) == (120, 100)


def test_chat_predicted_output_tokens(proxy_to_fake: ProxyToFake, records: RecordCollector) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).chat.completions.create(
        model="gpt-4o", messages=HI, **replay("chat-gpt-4o-prediction")
    )
    usage = records.only().usage
    assert (usage.accepted_prediction_tokens, usage.rejected_prediction_tokens) == (20, 5)
    assert usage.output_tokens == 52


def test_chat_with_several_choices(proxy_to_fake: ProxyToFake, records: RecordCollector) -> None:
    _, proxy_url = proxy_to_fake
    completion = sdk(proxy_url).chat.completions.create(
        model="gpt-4o-mini", messages=HI, n=3, **replay("chat-gpt-4o-mini-n3")
    )
    assert len(completion.choices) == 3
    assert records.only().usage.output_tokens == 9


def test_streamed_chat_usage_is_asked_for_and_hidden_from_the_client(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    fake, proxy_url = proxy_to_fake
    chunks = list(sdk(proxy_url).chat.completions.create(model="gpt-4o", messages=HI, stream=True))
    assert fake.last.json()["stream_options"] == {"include_usage": True}
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    usage = records.only().usage
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (12, 6, False)


def test_streamed_chat_replay_usage(proxy_to_fake: ProxyToFake, records: RecordCollector) -> None:
    _, proxy_url = proxy_to_fake
    stream = sdk(proxy_url).chat.completions.create(
        model="gpt-4o-mini",
        messages=HI,
        stream=True,
        stream_options={"include_usage": True},
        **replay("chat-gpt-4o-mini-stream-usage"),
    )
    assert list(stream)[-1].usage is not None
    record = records.only()
    assert (record.usage.input_tokens, record.usage.output_tokens) == (19, 8)
    assert record.time_to_first_token_seconds is not None


def test_responses_reasoning_cached_and_service_tier(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).responses.create(
        model="o4-mini", input="Capital of France?", **replay("responses-o4-mini-reasoning")
    )
    record = records.only()
    usage = record.usage
    assert (usage.input_tokens, usage.cached_input_tokens) == (2000, 1500)
    assert (usage.output_tokens, usage.reasoning_tokens) == (800, 640)
    assert record.service_tier == "flex"
    assert record.endpoint == "responses"


def test_streamed_responses_usage_comes_from_response_completed(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    events = list(
        sdk(proxy_url).responses.create(
            model="gpt-4o", input="Hi", stream=True, **replay("responses-gpt-4o-stream")
        )
    )
    assert events[-1].type == "response.completed"
    usage = records.only().usage
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (37, 11, False)


def test_legacy_completion(proxy_to_fake: ProxyToFake, records: RecordCollector) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Say this is a test",
        **replay("completions-instruct"),
    )
    usage = records.only().usage
    assert (usage.input_tokens, usage.output_tokens) == (5, 7)


def test_embeddings(proxy_to_fake: ProxyToFake, records: RecordCollector) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).embeddings.create(
        model="text-embedding-3-small",
        input="The food was delicious",
        **replay("embeddings-3-small"),
    )
    record = records.only()
    assert (record.endpoint, record.usage.input_tokens) == ("embeddings", 8)
    assert record.price is not None and record.price.cost_usd > 0


def test_dalle3_images_by_count_size_and_quality(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).images.generate(
        model="dall-e-3",
        prompt="otter",
        size="1792x1024",
        quality="hd",
        **replay("images-dall-e-3"),
    )
    record = records.only()
    assert record.usage.images == 1
    assert (record.usage.image_size, record.usage.image_quality) == ("1792x1024", "hd")
    assert record.cost_usd == Decimal("0.12")


def test_dalle3_default_size_and_quality(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).images.generate(model="dall-e-3", prompt="otter", **replay("images-dall-e-3"))
    assert records.only().cost_usd == Decimal("0.04")


def test_gpt_image_tokens(proxy_to_fake: ProxyToFake, records: RecordCollector) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).images.generate(
        model="gpt-image-1", prompt="otter", n=2, **replay("images-gpt-image-1")
    )
    usage = records.only().usage
    assert (usage.images, usage.image_size, usage.image_quality) == (2, "1024x1536", "medium")
    assert (usage.input_tokens, usage.image_input_tokens, usage.output_tokens) == (50, 10, 3160)


@pytest.mark.parametrize(
    ("fixture", "model", "seconds"),
    [
        ("transcription-whisper-verbose", "whisper-1", Decimal("8.47")),
        ("transcription-whisper-duration", "whisper-1", Decimal(9)),
    ],
)
def test_transcription_by_duration(
    proxy_to_fake: ProxyToFake,
    records: RecordCollector,
    fixture: str,
    model: str,
    seconds: Decimal,
) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).audio.transcriptions.create(
        model=model, file=("a.mp3", io.BytesIO(b"ID3"), "audio/mpeg"), **replay(fixture)
    )
    record = records.only()
    assert (record.endpoint, record.usage.audio_seconds) == ("audio", seconds)
    assert record.cost_usd == (Decimal("0.006") * seconds / 60)


def test_transcription_by_tokens(proxy_to_fake: ProxyToFake, records: RecordCollector) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).audio.transcriptions.create(
        model="gpt-4o-transcribe",
        file=("a.mp3", io.BytesIO(b"ID3"), "audio/mpeg"),
        **replay("transcription-gpt-4o-transcribe"),
    )
    usage = records.only().usage
    assert (usage.input_tokens, usage.audio_input_tokens, usage.output_tokens) == (14, 14, 45)


def test_speech_by_input_characters(proxy_to_fake: ProxyToFake, records: RecordCollector) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).audio.speech.create(model="tts-1", voice="alloy", input="Hello world")
    record = records.only()
    assert record.usage.input_characters == len("Hello world")
    assert record.cost_usd == Decimal(15) * 11 / 1_000_000


def test_moderation_costs_nothing(proxy_to_fake: ProxyToFake, records: RecordCollector) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).moderations.create(model="omni-moderation-latest", input="Hi")
    record = records.only()
    assert record.cost_usd == 0 and record.price is not None


def test_unreported_stream_usage_is_counted_with_tiktoken(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    list(
        sdk(proxy_url).chat.completions.create(
            model="llama-3.1-8b-instruct",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            extra_headers={"x-fake-no-usage": "1"},
        )
    )
    usage = records.only().usage
    assert usage.estimated
    assert usage.input_tokens == prompt_tokens.count_chat_prompt(
        "llama-3.1-8b-instruct", messages, None
    )
    assert usage.output_tokens == tokens.count_text("llama-3.1-8b-instruct", "".join(STREAM_CHUNKS))


def test_unreported_json_usage_is_counted_with_tiktoken(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    sdk(proxy_url).chat.completions.create(
        model="gpt-4o", messages=HI, extra_headers={"x-fake-no-usage": "1"}
    )
    usage = records.only().usage
    assert usage.estimated and usage.output_tokens == tokens.count_text(
        "gpt-4o", "".join(STREAM_CHUNKS)
    )


def test_client_hang_up_mid_stream_gives_one_client_closed_record(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    fake, proxy_url = proxy_to_fake
    request = {"model": "held-stream", "messages": HI, "stream": True}
    with httpx.stream("POST", f"{proxy_url}/chat/completions", json=request) as response:
        next(response.iter_lines())
    assert fake.cancelled.wait(timeout=2)
    record = records.only()
    assert record.status == "client_closed"
    assert record.usage.estimated
    assert record.usage.input_tokens == prompt_tokens.count_chat_prompt("held-stream", HI, None)
    assert record.usage.output_tokens == tokens.count_text("held-stream", STREAM_CHUNKS[0])


def test_upstream_error_gives_one_record_with_its_status(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    with pytest.raises(openai.InternalServerError):
        sdk(proxy_url).chat.completions.create(model="server-error", messages=HI)
    record = records.only()
    assert (record.status, record.usage.input_tokens, record.cost_usd) == ("500", 0, 0)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"model": "claude-sonnet", "messages": []}', "404"),
        (b'{"model": ', "400"),
    ],
)
def test_refused_calls_give_one_record(
    fake_upstream: ProxyToFake,
    start_proxy: ProxyFactory,
    records: RecordCollector,
    body: bytes,
    status: str,
) -> None:
    fake, upstream_url = fake_upstream
    proxy_url = start_proxy(single_upstream_config(upstream_url) + 'models = ["gpt-*"]\n')
    response = httpx.post(
        f"{proxy_url}/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    record = records.only()
    assert record.status == str(response.status_code) == status
    assert record.request_id == response.headers["x-metering-request-id"]
    assert fake.requests == []


def test_unreachable_upstream_gives_one_502_record(
    start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    proxy_url = start_proxy(single_upstream_config("http://127.0.0.1:9/v1"))
    with pytest.raises(openai.APIStatusError):
        sdk(proxy_url).chat.completions.create(model="gpt-4o", messages=HI)
    assert records.only().status == "502"


def test_record_ids_match_the_client_header(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    response = httpx.post(f"{proxy_url}/chat/completions", json={"model": "gpt-4o", "messages": HI})
    assert records.only().request_id == response.headers["x-metering-request-id"]


def test_prompt_split_sums_to_the_reported_input(
    proxy_to_fake: ProxyToFake, records: RecordCollector
) -> None:
    _, proxy_url = proxy_to_fake
    messages = [
        {"role": "system", "content": "You are a careful assistant. " * 20},
        {"role": "user", "content": "First question?"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Second question?"},
    ]
    sdk(proxy_url).chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    record = records.only()
    split = record.prompt_split
    assert split is not None
    assert split.system + split.tools + split.history + split.latest == record.usage.input_tokens
    assert split.system > split.history > 0 and split.tools == 0


def test_an_unpriced_model_is_named_in_one_log_line(
    proxy_to_fake: ProxyToFake, records: RecordCollector, caplog: pytest.LogCaptureFixture
) -> None:
    _, proxy_url = proxy_to_fake
    for _ in range(3):
        sdk(proxy_url).chat.completions.create(model="house-model-7", messages=HI)
    assert all(record.price is None for record in records.wait_for(3))
    warnings = [r for r in caplog.records if "house-model-7" in r.getMessage()]
    assert len(warnings) == 1


def test_a_gpu_hour_upstream_leaves_the_cost_to_the_hour_split(
    fake_upstream: ProxyToFake, start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    _, upstream_url = fake_upstream
    proxy_url = start_proxy(
        single_upstream_config(upstream_url) + 'kind = "openai-compatible"\nhourly_cost_usd = 2.5\n'
    )
    sdk(proxy_url).chat.completions.create(model="llama-3.1-70b", messages=HI)
    record = records.only()
    assert record.gpu_hours_pending and record.price is None
    assert record.usage.input_tokens == 12


def test_a_record_is_dated_by_the_proxys_clock_not_the_real_date(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    # Far from today in either direction, so the real date can never pass for it.
    clock = FakeClock(datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC))
    _, upstream_url = fake_upstream
    proxy_url = start_proxy(single_upstream_config(upstream_url), clock=clock)

    sdk(proxy_url).chat.completions.create(model="gpt-4o", messages=HI)

    assert records.only().created_at == datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
