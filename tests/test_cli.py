"""`metering-proxy serve` as users run it: a real process serving real calls."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import single_upstream_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.process import CLI, serving


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_forwards_calls(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, workers: str
) -> None:
    fake, upstream_url = fake_upstream
    config = tmp_path / "proxy.toml"
    config.write_text(single_upstream_config(upstream_url))
    with serving("--config", str(config), "--workers", workers, cwd=tmp_path) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-x", max_retries=0)
        for _ in range(4):
            completion = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
            )
            assert completion.id == "chatcmpl-fake"
    assert len(fake.requests) == 4


def test_serve_without_config_listens_on_the_given_port(tmp_path: Path) -> None:
    with serving(cwd=tmp_path) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}


def test_serve_refuses_a_bad_config_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[upstreams]]\nname = "a"\nbase_url = "ftp://x"\n')
    result = subprocess.run(
        [CLI, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "base_url must start with http:// or https://" in result.stderr


def requests_counted(metrics_text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "llm_proxy_requests_total" and sample.labels.get("status") == "200"
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_count_every_worker_s_calls(
    fake_upstream: tuple[FakeUpstream, str], tmp_path: Path, workers: str
) -> None:
    _, upstream_url = fake_upstream
    config = tmp_path / "proxy.toml"
    config.write_text(single_upstream_config(upstream_url))
    with (
        serving("--config", str(config), "--workers", workers, cwd=tmp_path) as url,
        httpx.Client() as client,
    ):
        for _ in range(12):
            client.post(
                f"{url}/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
                headers={"Connection": "close"},  # spread the calls over the workers
            )
        scrapes = [
            client.get(f"{url}/metrics", headers={"Connection": "close"}).text for _ in range(6)
        ]
    assert [requests_counted(text) for text in scrapes] == [12.0] * 6
