"""An upstream's `fallback`: a call it turns away before answering goes to the fallback instead,
and a call that has started to reach the client never goes anywhere else."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from proxy.settings import ConfigError
from tests.conftest import ProxyFactory
from tests.support.fake_upstream import STREAM_CHUNKS, FakeUpstream
from tests.support.process import free_port
from tests.support.records import RecordCollector
from tests.support.servers import serve_in_thread

Served = tuple[FakeUpstream, str]
HI = [{"role": "user", "content": "Hi"}]


def _config(primary_url: str, backup_url: str) -> str:
    return (
        "[timeouts]\nread = 1.0\n"  # below the fake's `slow_seconds`
        f'[[upstreams]]\nname = "primary"\nbase_url = "{primary_url}"\nfallback = "backup"\n'
        f'[[upstreams]]\nname = "backup"\nbase_url = "{backup_url}"\n'
    )


def _unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def _sdk(proxy_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy_url, api_key="sk-client", max_retries=0)


def _chat(proxy_url: str, model: str = "gpt-4o") -> httpx.Response:
    return httpx.post(f"{proxy_url}/chat/completions", json={"model": model, "messages": HI})


@pytest.fixture
def backup() -> Iterator[Served]:
    """A second, healthy fake upstream."""
    fake = FakeUpstream()
    with serve_in_thread(fake) as url:
        yield fake, f"{url}/v1"
    fake.release()


@pytest.fixture(params=[429, 500, 503])
def turning_away(request: pytest.FixtureRequest) -> Iterator[Served]:
    """A fake upstream that answers every call with a 429 or a 5xx."""
    fake = FakeUpstream(failing_status=request.param)
    with serve_in_thread(fake) as url:
        yield fake, f"{url}/v1"


def test_a_fallback_that_is_not_an_upstream_is_refused_at_load(start_proxy: ProxyFactory) -> None:
    config = '[[upstreams]]\nname = "a"\nbase_url = "http://x/v1"\nfallback = "b"\n'
    with pytest.raises(ConfigError, match="fallback 'b' of upstream 'a' is not an upstream"):
        start_proxy(config)


def test_fallbacks_that_go_in_a_circle_are_refused_at_load(start_proxy: ProxyFactory) -> None:
    config = "".join(
        f'[[upstreams]]\nname = "{name}"\nbase_url = "http://x/v1"\nfallback = "{fallback}"\n'
        for name, fallback in (("a", "b"), ("b", "a"))
    )
    with pytest.raises(ConfigError, match="a -> b -> a"):
        start_proxy(config)


def test_an_unreachable_upstream_falls_back_and_the_record_names_the_fallback(
    backup: Served, start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    _, backup_url = backup
    proxy_url = start_proxy(_config(_unreachable(), backup_url))
    completion = _sdk(proxy_url).chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "".join(STREAM_CHUNKS)
    record = records.only()
    assert (record.upstream, record.status, record.usage.input_tokens) == ("backup", "200", 12)


def test_a_429_or_5xx_falls_back_with_the_same_call(
    turning_away: Served, backup: Served, start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    primary, primary_url = turning_away
    fallback, backup_url = backup
    proxy_url = start_proxy(_config(primary_url, backup_url))
    assert _chat(proxy_url).status_code == 200
    assert fallback.last.body == primary.last.body
    assert (records.only().upstream, len(primary.requests)) == ("backup", 1)


def test_when_every_upstream_turns_the_call_away_the_last_answer_is_relayed(
    turning_away: Served, start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    last, backup_url = turning_away
    proxy_url = start_proxy(_config(_unreachable(), backup_url))
    response = _chat(proxy_url)
    assert response.status_code == last.failing_status
    assert response.json()["error"]["message"] == "The fake upstream is failing."
    record = records.only()
    assert (record.upstream, record.status) == ("backup", str(last.failing_status))


@pytest.mark.parametrize(
    ("model", "status"),
    [("bad-request", 400), ("slow-headers", 504)],
    ids=["client-error", "timeout-the-upstream-may-have-worked-through"],
)
def test_an_answer_another_upstream_could_not_improve_is_not_retried(
    fake_upstream: Served, backup: Served, start_proxy: ProxyFactory, model: str, status: int
) -> None:
    _, primary_url = fake_upstream
    fallback, backup_url = backup
    proxy_url = start_proxy(_config(primary_url, backup_url))
    assert _chat(proxy_url, model).status_code == status
    assert fallback.requests == []


def test_a_failure_once_the_answer_reached_the_client_is_not_retried(
    fake_upstream: Served, backup: Served, start_proxy: ProxyFactory, records: RecordCollector
) -> None:
    _, primary_url = fake_upstream
    fallback, backup_url = backup
    proxy_url = start_proxy(_config(primary_url, backup_url))
    request = {"model": "broken-stream", "messages": HI, "stream": True}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{proxy_url}/chat/completions", json=request) as response,
    ):
        list(response.iter_lines())
    assert fallback.requests == []
    record = records.only()
    assert (record.upstream, record.status) == ("primary", "502")


def test_a_call_that_is_not_model_routed_does_not_fall_back(
    backup: Served, start_proxy: ProxyFactory
) -> None:
    fallback, backup_url = backup
    proxy_url = start_proxy(_config(_unreachable(), backup_url))
    # A file or a batch made at the fallback would be missing where the next call looks for it.
    assert httpx.get(f"{proxy_url}/files").status_code == 502
    assert fallback.requests == []
