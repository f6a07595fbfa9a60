"""The real `openai` SDK, sync and async, through the proxy on a real uvicorn to a fake upstream."""

from __future__ import annotations

import io

import openai
import pytest

from tests.support.fake_upstream import FAKE_MP3, STREAM_CHUNKS, FakeUpstream

ProxyToFake = tuple[FakeUpstream, str]


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="sk-client-key", max_retries=0)


def async_sdk(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="sk-client-key", max_retries=0)


def test_chat_completion(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    completion = sdk(proxy_url).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
    )
    assert completion.choices[0].message.content == "".join(STREAM_CHUNKS)
    assert completion.usage is not None and completion.usage.total_tokens == 18
    assert fake.last.path == "/v1/chat/completions"
    assert fake.last.json()["messages"] == [{"role": "user", "content": "Hi"}]


def test_streamed_chat_completion(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    stream = sdk(proxy_url).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    texts = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    assert "".join(t for t in texts if t) == "".join(STREAM_CHUNKS)


async def test_async_streamed_chat_completion(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    async with async_sdk(proxy_url) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


async def test_async_chat_completion(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    async with async_sdk(proxy_url) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
        )
    assert completion.id == "chatcmpl-fake"


def test_legacy_completion(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    completion = sdk(proxy_url).completions.create(model="gpt-3.5-turbo-instruct", prompt="Hello")
    assert completion.choices[0].text == " world"


def test_response(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    response = sdk(proxy_url).responses.create(model="gpt-4o", input="Hi")
    assert response.output_text == "Hello"
    assert fake.last.path == "/v1/responses"


def test_streamed_response(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    events = list(sdk(proxy_url).responses.create(model="gpt-4o", input="Hi", stream=True))
    assert [event.type for event in events] == [
        "response.created",
        "response.output_text.delta",
        "response.completed",
    ]


def test_embeddings(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    result = sdk(proxy_url).embeddings.create(model="text-embedding-3-small", input="Hello")
    assert result.data[0].embedding == [0.25, -0.5, 0.125]
    assert result.usage.prompt_tokens == 5


def test_image_generation(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    images = sdk(proxy_url).images.generate(model="dall-e-3", prompt="a cat", size="1024x1024")
    assert images.data is not None and images.data[0].url == "https://images.example/fake.png"
    assert fake.last.json()["size"] == "1024x1024"


def test_multipart_image_edit_arrives_byte_for_byte(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
    sdk(proxy_url).images.edit(
        model="dall-e-2", image=("cat.png", io.BytesIO(png), "image/png"), prompt="add a hat"
    )
    assert fake.last.path == "/v1/images/edits"
    assert fake.last.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert png in fake.last.body
    assert b'name="model"\r\n\r\ndall-e-2\r\n' in fake.last.body


def test_image_variation(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    sdk(proxy_url).images.create_variation(
        model="dall-e-2", image=("cat.png", io.BytesIO(b"\x89PNG"), "image/png")
    )
    assert fake.last.path == "/v1/images/variations"


def test_audio_transcription(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    transcript = sdk(proxy_url).audio.transcriptions.create(
        model="whisper-1", file=("hello.mp3", io.BytesIO(FAKE_MP3), "audio/mpeg")
    )
    assert transcript.text == "hello from the fake upstream"
    assert FAKE_MP3 in fake.last.body


def test_audio_translation(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    translation = sdk(proxy_url).audio.translations.create(
        model="whisper-1", file=("hallo.mp3", io.BytesIO(FAKE_MP3), "audio/mpeg")
    )
    assert translation.text == "hello from the fake upstream"
    assert fake.last.path == "/v1/audio/translations"


def test_audio_speech_is_binary(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    speech = sdk(proxy_url).audio.speech.create(model="tts-1", voice="alloy", input="Hello")
    assert speech.content == FAKE_MP3
    assert speech.response.headers["content-type"] == "audio/mpeg"


def test_moderation(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    moderation = sdk(proxy_url).moderations.create(model="omni-moderation-latest", input="Hi")
    assert moderation.results[0].flagged is False


def test_models_of_a_single_upstream(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    assert [model.id for model in sdk(proxy_url).models.list()] == list(fake.models)


def test_files_call_is_forwarded_as_is(proxy_to_fake: ProxyToFake) -> None:
    fake, proxy_url = proxy_to_fake
    content = b'{"custom_id": "1"}\n' * 1000
    uploaded = sdk(proxy_url).files.create(
        file=("batch.jsonl", io.BytesIO(content), "application/jsonl"), purpose="batch"
    )
    assert uploaded.id == "file-fake"
    assert fake.last.path == "/v1/files" and content in fake.last.body
    assert sdk(proxy_url).files.list().data == []


def test_rate_limit_reaches_the_sdk_as_a_typed_error(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    with pytest.raises(openai.RateLimitError) as raised:
        sdk(proxy_url).chat.completions.create(
            model="rate-limited", messages=[{"role": "user", "content": "Hi"}]
        )
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.code == "rate_limit_exceeded"


def test_bad_request_reaches_the_sdk_with_the_upstream_message(proxy_to_fake: ProxyToFake) -> None:
    _, proxy_url = proxy_to_fake
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(proxy_url).chat.completions.create(
            model="bad-request", messages=[{"role": "user", "content": "Hi"}]
        )
    assert raised.value.message.endswith("Invalid value for 'temperature'.")
