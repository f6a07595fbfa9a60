"""Passthrough mode sends the client's key upstream; managed mode sends the configured key only."""

from __future__ import annotations

import openai

from tests.conftest import ProxyFactory, single_upstream_config
from tests.support.fake_upstream import FakeUpstream

HI = [{"role": "user", "content": "Hi"}]


def test_passthrough_forwards_the_client_key(proxy_to_fake: tuple[FakeUpstream, str]) -> None:
    fake, proxy_url = proxy_to_fake
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-client-own", max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=HI)
    assert fake.last.headers["authorization"] == "Bearer sk-client-own"


def test_managed_mode_sends_the_configured_key_and_never_the_client_key(
    fake_upstream: tuple[FakeUpstream, str], start_proxy: ProxyFactory
) -> None:
    fake, upstream_url = fake_upstream
    proxy_url = start_proxy(
        single_upstream_config(upstream_url) + 'api_key_env = "VENDOR_KEY"\n',
        environ={"VENDOR_KEY": "sk-managed-upstream"},
    )
    client = openai.OpenAI(base_url=proxy_url, api_key="sk-proxy-key", max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=HI)
    client.files.list()
    for call in fake.requests:
        assert call.headers["authorization"] == "Bearer sk-managed-upstream"
        assert "sk-proxy-key" not in str(call.headers)
