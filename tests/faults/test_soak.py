"""The soak in its one-minute form: no errors, no leak, every call stored exactly once.

`make soak` runs it for ten minutes; here a minute at a modest rate keeps the suite reasonable
while still catching a leak per call (6,000 calls) or a lost or doubled record. Each call is an
open trace until the trace idle time passes: 10 s here instead of 300, so that the memory they
take has stopped growing before the RSS slope is fitted (over the second half of the run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECONDS, RATE, TRACE_IDLE_SECONDS = 60, 100, 10


@pytest.mark.soak
def test_a_one_minute_soak_passes_its_checks(postgres_server: None, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.soak", "--seconds", str(SECONDS)]
    command += ["--rate", str(RATE), "--trace-idle-seconds", str(TRACE_IDLE_SECONDS)]
    command += ["--output-dir", str(tmp_path)]
    soak = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert soak.returncode == 0, soak.stdout + soak.stderr

    results = json.loads((tmp_path / "soak.json").read_text())
    assert all(check["ok"] for check in results["checks"]), results["checks"]
    assert results["calls"] == SECONDS * RATE and results["errors"] == {}
    assert results["rows"] == results["distinct_rows"] == results["calls"]
    abandoned = results["calls_by_kind"]["abandoned"]
    # The abandoned streams were cut while the proxy relayed them (all of them, unless the
    # client stalled for the whole of a slowed stream), and recorded all the same.
    assert 0 < results["statuses"].get("client_closed", 0) <= abandoned
    assert len(results["samples"]) >= SECONDS / 5
    assert "| every call stored exactly once |" in (tmp_path / "SOAK.md").read_text()
