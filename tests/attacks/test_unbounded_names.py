"""A client that sends a flood of made-up model names costs the proxy neither an ever-growing
set of names nor a log line per name (the metrics' model labels stay capped too)."""

from __future__ import annotations

from pathlib import Path

import httpx

from proxy.metering.unpriced import MAX_WARNINGS_PER_MINUTE
from proxy.metrics import MAX_MODEL_LABELS
from tests.conftest import single_upstream_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.process import serving

NAMES = 1_500


def test_a_flood_of_unpriced_model_names_logs_a_bounded_number_of_warnings(
    tmp_path: Path, fake_upstream: tuple[FakeUpstream, str]
) -> None:
    _, upstream_url = fake_upstream
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'{single_upstream_config(upstream_url)}[ledger]\njournal_dir = "{tmp_path / "j"}"\n'
    )
    with serving("--config", str(config), cwd=tmp_path) as url:
        with httpx.Client(base_url=f"{url}/v1", headers={"Authorization": "Bearer sk-x"}) as client:
            for number in range(NAMES):
                body = {
                    "model": f"made-up-{number}",
                    "messages": [{"role": "user", "content": "Hi"}],
                }
                assert client.post("chat/completions", json=body).status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
    log = (tmp_path / next(p.name for p in tmp_path.glob("serve-*.log"))).read_text()

    warnings = [line for line in log.splitlines() if "no known price" in line]
    assert 1 <= len(warnings) <= MAX_WARNINGS_PER_MINUTE + 1, len(warnings)
    unpriced_labels = [
        line
        for line in metrics.splitlines()
        if line.startswith("llm_proxy_unpriced_requests_total{")
    ]
    assert len(unpriced_labels) <= MAX_MODEL_LABELS + 1
