"""The benchmark runs end to end on a tiny load: every scenario, both targets, the ledger check.

Timing is not asserted here (figures on a shared test machine mean nothing); `make bench` is
where they are measured, and `benchmarks/RESULTS.md` where they are kept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def wrk() -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("wrk is not installed, and CI runs every test")
        pytest.skip("wrk is not installed (apt-get install wrk)")


def test_the_benchmark_measures_every_scenario_and_checks_the_ledger(
    wrk: None, postgres_server: None, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "benchmarks", "--seconds", "1", "--repetitions", "1"]
    command += ["--memory-calls", "300", "--no-scale-out", "--no-pin-postgres"]
    command += ["--output-dir", str(tmp_path)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["scenarios"]) == {scenario.name for scenario in SCENARIOS}
    for name, scenario in results["scenarios"].items():
        for target in ("direct", "metering-proxy"):
            (run,) = scenario["runs"][target]
            assert run["calls"] > 0 and run["ok_calls"] == run["calls"], (name, target, run)
            assert run["latency_ms"]["p50"] > 0
        assert scenario["summary"]["metering-proxy"]["cpu_ms_per_call"]["median"] > 0
        assert scenario["added"]["metering-proxy"]["p50_ms"] is not None
    memory = results["memory"]["metering-proxy"]
    assert memory["calls"] == 300 and memory["before_bytes"] > 0
    ledger = results["ledger"]["metering-proxy"]
    assert ledger["metered_calls"] > 300 and ledger["rows"] == ledger["metered_calls"]
    goals = {check["goal"] for check in results["checks"]["metering-proxy"]}
    assert "added p50 at concurrency 1" in goals and len(goals) == 9
    table = (tmp_path / "RESULTS.md").read_text()
    assert "| chat-c64 | metering-proxy |" in table and "Targets for metering-proxy" in table
