"""Calls land on the upstream whose model patterns match first, addressed in its dialect."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import ProxyFactory
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import serve_in_thread

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def second_upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream(models=("llama-3.1-8b-instruct", "gpt-4o"))
    with serve_in_thread(fake) as url:
        yield fake, f"{url}/v1"


@pytest.fixture
def two_upstreams(
    fake_upstream: tuple[FakeUpstream, str],
    second_upstream: tuple[FakeUpstream, str],
    start_proxy: ProxyFactory,
) -> tuple[FakeUpstream, FakeUpstream, str]:
    """`openai` serves gpt-* and dall-e-*, `llama` (self-hosted) serves llama-*; default openai."""
    vendor, vendor_url = fake_upstream
    llama, llama_url = second_upstream
    proxy_url = start_proxy(
        f"""
[[upstreams]]
name = "openai"
base_url = "{vendor_url}"
models = ["gpt-*", "text-embedding-*", "dall-e-*"]

[[upstreams]]
name = "llama"
kind = "openai-compatible"
base_url = "{llama_url}"
models = ["llama-*", "gpt-*"]
"""
    )
    return vendor, llama, proxy_url


def client(proxy_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy_url, api_key="sk-client", max_retries=0)


def test_calls_route_by_model_pattern(
    two_upstreams: tuple[FakeUpstream, FakeUpstream, str],
) -> None:
    vendor, llama, proxy_url = two_upstreams
    client(proxy_url).chat.completions.create(model="llama-3.1-8b-instruct", messages=HI)
    client(proxy_url).embeddings.create(model="text-embedding-3-small", input="x")
    assert [r.path for r in llama.requests] == ["/v1/chat/completions"]
    assert [r.path for r in vendor.requests] == ["/v1/embeddings"]


def test_the_first_matching_upstream_wins(
    two_upstreams: tuple[FakeUpstream, FakeUpstream, str],
) -> None:
    vendor, llama, proxy_url = two_upstreams
    client(proxy_url).chat.completions.create(model="gpt-4o", messages=HI)
    assert len(vendor.requests) == 1 and llama.requests == []


def test_multipart_calls_route_by_their_model_field(
    two_upstreams: tuple[FakeUpstream, FakeUpstream, str],
) -> None:
    vendor, llama, proxy_url = two_upstreams
    with pytest.raises(openai.NotFoundError):
        client(proxy_url).audio.transcriptions.create(
            model="whisper-1", file=("a.mp3", b"ID3", "audio/mpeg")
        )
    client(proxy_url).images.edit(model="dall-e-2", image=("a.png", b"\x89PNG"), prompt="hat")
    assert [r.path for r in vendor.requests] == ["/v1/images/edits"] and llama.requests == []


def test_a_model_no_upstream_serves_is_a_404_naming_it(
    two_upstreams: tuple[FakeUpstream, FakeUpstream, str],
) -> None:
    vendor, llama, proxy_url = two_upstreams
    with pytest.raises(openai.NotFoundError) as raised:
        client(proxy_url).chat.completions.create(model="claude-sonnet", messages=HI)
    assert "claude-sonnet" in raised.value.message
    assert raised.value.code == "model_not_found"
    assert raised.value.body == {
        "message": raised.value.body["message"],  # type: ignore[index]
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert vendor.requests == [] and llama.requests == []


def test_model_list_is_the_union_of_what_each_upstream_is_sent(
    two_upstreams: tuple[FakeUpstream, FakeUpstream, str],
) -> None:
    _, _, proxy_url = two_upstreams
    listed = [model.id for model in client(proxy_url).models.list()]
    # The llama server also lists gpt-4o, but gpt-4o calls go to the openai upstream.
    assert sorted(listed) == sorted(
        ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "dall-e-3", "llama-3.1-8b-instruct"]
    )
    assert listed.count("gpt-4o") == 1


def test_model_list_leaves_out_an_upstream_that_fails(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    _, vendor_url = fake_upstream
    proxy_url = start_proxy(
        f"""
[[upstreams]]
name = "openai"
base_url = "{vendor_url}"
models = ["gpt-*"]

[[upstreams]]
name = "down"
base_url = "http://127.0.0.1:9/v1"
models = ["llama-*"]
"""
    )
    assert [m.id for m in client(proxy_url).models.list()] == ["gpt-4o", "gpt-4o-mini"]


def test_retrieving_a_model_goes_to_the_upstream_serving_it(
    two_upstreams: tuple[FakeUpstream, FakeUpstream, str],
) -> None:
    vendor, llama, proxy_url = two_upstreams
    httpx.get(f"{proxy_url}/models/llama-3.1-8b-instruct")
    assert [r.path for r in llama.requests] == ["/v1/models/llama-3.1-8b-instruct"]
    assert vendor.requests == []


def test_other_paths_go_to_the_default_upstream(
    fake_upstream: tuple[FakeUpstream, str],
    second_upstream: tuple[FakeUpstream, str],
    start_proxy: ProxyFactory,
) -> None:
    vendor, vendor_url = fake_upstream
    llama, llama_url = second_upstream
    proxy_url = start_proxy(
        f"""
default_upstream = "llama"

[[upstreams]]
name = "openai"
base_url = "{vendor_url}"

[[upstreams]]
name = "llama"
base_url = "{llama_url}"
models = ["llama-*"]
"""
    )
    client(proxy_url).files.list()
    assert [r.path for r in llama.requests] == ["/v1/files"] and vendor.requests == []


def test_azure_upstream_gets_deployment_path_api_version_and_api_key(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    fake, upstream_url = fake_upstream
    azure_base = upstream_url.removesuffix("/v1") + "/openai"
    proxy_url = start_proxy(
        f"""
[[upstreams]]
name = "azure"
kind = "azure"
base_url = "{azure_base}"
api_key_env = "AZURE_OPENAI_API_KEY"
api_version = "2024-10-21"
deployments = {{ "gpt-4o" = "prod-gpt4o" }}
""",
        environ={"AZURE_OPENAI_API_KEY": "azure-secret"},
    )
    completion = client(proxy_url).chat.completions.create(model="gpt-4o", messages=HI)
    assert completion.id == "chatcmpl-fake"
    call = fake.last
    assert call.path == "/openai/deployments/prod-gpt4o/chat/completions"
    assert call.query == "api-version=2024-10-21"
    assert call.headers["api-key"] == "azure-secret"
    assert "authorization" not in call.headers


@pytest.fixture
def azure_passthrough(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> tuple[FakeUpstream, str]:
    """An `azure` upstream with no key of its own and default deployments."""
    fake, upstream_url = fake_upstream
    azure_base = upstream_url.removesuffix("/v1") + "/openai"
    proxy_url = start_proxy(
        f'[[upstreams]]\nname = "az"\nkind = "azure"\nbase_url = "{azure_base}"\n'
    )
    return fake, proxy_url


def test_azure_deployment_defaults_to_the_model_name(
    azure_passthrough: tuple[FakeUpstream, str],
) -> None:
    fake, proxy_url = azure_passthrough
    client(proxy_url).embeddings.create(model="text-embedding-3-small", input="x")
    assert fake.last.path == "/openai/deployments/text-embedding-3-small/embeddings"
    # Passthrough: the key the client gave as a bearer token goes to Azure as its api-key.
    assert fake.last.headers["api-key"] == "sk-client"


def test_azure_responses_are_not_deployment_scoped(
    azure_passthrough: tuple[FakeUpstream, str],
) -> None:
    fake, proxy_url = azure_passthrough
    client(proxy_url).responses.create(model="gpt-4o", input="Hi")
    assert fake.last.path == "/openai/responses"
    assert fake.last.query == "api-version=2024-10-21"
