"""The Prometheus config, rules and Alertmanager config, checked with the real promtool/amtool.

Debian ships `promtool` in the `prometheus` package and `amtool` in `prometheus-alertmanager`
(`.ci/run` installs both). Without them the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ROOT / "alertmanager" / "alertmanager.yml"

DEBIAN_PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = (
            f"`{name}` not found: install Debian's `{DEBIAN_PACKAGES[name]}` package "
            f"(apt-get install --no-install-recommends {DEBIAN_PACKAGES[name]})"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in _load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_the_files_are_where_the_config_says() -> None:
    assert PROMETHEUS_CONFIG.is_file()
    assert ALERTMANAGER_CONFIG.is_file()
    assert {path.name for path in RULE_FILES} == {"recording.yml", "alerts.yml"}
    assert RULE_TEST_FILES


def test_promtool_checks_the_config_and_its_rule_files() -> None:
    result = _run(_tool("promtool"), "check", "config", PROMETHEUS_CONFIG)
    _assert_ok(result)
    # The config names both rule files, so a renamed file is caught here too.
    assert "2 rule files found" in result.stdout + result.stderr


def test_the_config_scrapes_the_proxy_and_alerts_to_alertmanager() -> None:
    config = _load(PROMETHEUS_CONFIG)
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "llm-metering-proxy"]
    assert job["scrape_interval"] == "15s"
    assert job["static_configs"][0]["targets"] == ["proxy:8080"]
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda path: path.name)
def test_promtool_checks_the_rules(rule_file: Path) -> None:
    _assert_ok(_run(_tool("promtool"), "check", "rules", rule_file))


@pytest.mark.parametrize("test_file", RULE_TEST_FILES, ids=lambda path: path.name)
def test_promtool_rule_unit_tests_pass(test_file: Path) -> None:
    _assert_ok(_run(_tool("promtool"), "test", "rules", test_file))


def test_amtool_checks_the_alertmanager_config() -> None:
    _assert_ok(_run(_tool("amtool"), "check-config", ALERTMANAGER_CONFIG))


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TEST_FILES:
        for test in _load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - firing == set(), "alerts with no firing test"
    assert names - quiet == set(), "alerts with no not-firing test"


def test_every_alert_has_a_severity_and_explains_itself() -> None:
    for rule in _alerts():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_the_issue_s_alerts_are_all_there() -> None:
    assert {rule["alert"] for rule in _alerts()} >= {
        "TeamBudget80Percent",
        "TeamBudgetExhausted",
        "TeamBudgetForecastExceeded",
        "UpstreamErrorRateHigh",
        "UpstreamLatencyP99High",
        "UnpricedCallsAppearing",
        "LedgerSpooling",
        "LedgerWriteErrors",
    }


def test_promtool_rejects_a_broken_rules_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n"
        "  - name: broken\n"
        "    rules:\n"
        "      - alert: Broken\n"
        "        expr: sum by (team) (rate(llm_proxy_cost_usd_total[5m]) > \n"
    )
    result = _run(_tool("promtool"), "check", "rules", broken)
    assert result.returncode != 0, result.stdout


def test_promtool_rule_tests_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    test_file = tmp_path / "wrong.yml"
    test_file.write_text(
        f"rule_files:\n  - {PROMETHEUS_DIR / 'rules' / 'alerts.yml'}\n"
        "tests:\n"
        "  - interval: 1m\n"
        "    input_series:\n"
        "      - series: 'llm_proxy_ledger_spooled_records{instance=\"p:8080\"}'\n"
        "        values: '0x30'\n"
        "    alert_rule_test:\n"
        "      - eval_time: 20m\n"
        "        alertname: LedgerSpooling\n"
        "        exp_alerts:\n"
        "          - exp_labels: {severity: critical, instance: 'p:8080'}\n"
    )
    result = _run(_tool("promtool"), "test", "rules", test_file)
    assert result.returncode != 0, result.stdout


def test_amtool_rejects_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "alertmanager.yml"
    broken.write_text("route:\n  receiver: nowhere\nreceivers:\n  - name: webhook\n")
    result = _run(_tool("amtool"), "check-config", broken)
    assert result.returncode != 0, result.stdout
