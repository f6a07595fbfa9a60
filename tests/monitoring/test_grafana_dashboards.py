"""The Grafana dashboards and provisioning files, checked statically.

Each check is a helper that returns the problems it finds, so the same helper runs over the
shipped dashboards (no problems) and over a deliberately broken one (a problem), which shows
the check can fail. Whether each PromQL expression parses and returns data is a matter for a
real Prometheus, not for these tests.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from proxy.ledger.models import Base
from proxy.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
RECORDING_RULES_FILE = ROOT / "prometheus" / "rules" / "recording.yml"
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"  # where compose mounts grafana/dashboards/

EXPECTED_DASHBOARDS = {
    "cost-overview.json",
    "latency-errors.json",
    "teams-budgets.json",
    "agents.json",
}
FILTER_VARIABLES = ("team", "model", "upstream")
PROMETHEUS_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Prometheus's own series of pending and firing alerts.
PROMETHEUS_BUILTINS = {"ALERTS": ()}

_SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}
_RECORDING_RULE = re.compile(r"\b[a-z_]+:[a-z0-9_:]+")
_PROXY_METRIC = re.compile(r"\bllm_proxy_[a-z_]+")
_BUILTIN_METRIC = re.compile(r"\bALERTS\b")
_SELECTOR = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")


# --- what the proxy, the rules and the ledger define ----------------------------------------


def _proxy_series_labels() -> dict[str, tuple[str, ...]]:
    """Every series name the proxy exports, with its labels, from a fresh `Metrics`."""
    metrics = Metrics(CollectorRegistry())
    grouped = [
        getattr(group, field.name)
        for group in (metrics.ledger, metrics.budgets)
        for field in dataclasses.fields(group)
    ]
    collectors = [*vars(metrics).values(), *grouped]
    labels = {
        # A labelled metric with no children collects no samples, so the label names come
        # from the collector itself.
        collector._name: tuple(collector._labelnames)
        for collector in collectors
        if isinstance(collector, MetricWrapperBase)
    }
    series: dict[str, tuple[str, ...]] = {}
    for family in metrics.registry.collect():
        for suffix in _SERIES_SUFFIXES[family.type]:
            series[family.name + suffix] = labels[family.name]
    return series


def _recording_rule_labels() -> dict[str, tuple[str, ...]]:
    """Recording rules by name; the level part (`team_model:`) names the labels they keep."""
    groups = yaml.safe_load(RECORDING_RULES_FILE.read_text())["groups"]
    names = [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]
    return {name: tuple(name.split(":")[0].split("_")) for name in names}


def _known_series() -> dict[str, tuple[str, ...]]:
    return {
        **_proxy_series_labels(),
        **_recording_rule_labels(),
        **PROMETHEUS_BUILTINS,
    }


KNOWN_SERIES = _known_series()


def _ledger_columns() -> dict[str, set[str]]:
    return {
        name: {column.name for column in table.columns}
        for name, table in Base.metadata.tables.items()
    }


# --- reading dashboards -----------------------------------------------------------------------


def _load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}


DASHBOARDS = _load_dashboards()


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in rows."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def _is_prometheus(panel: dict[str, Any]) -> bool:
    return any("expr" in target for target in panel.get("targets", []))


def _exprs(panel: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in panel.get("targets", []) if "expr" in target]


def _all_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [expr for panel in _panels(dashboard) for expr in _exprs(panel)]
    for variable in _variables(dashboard).values():
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def _metric_names(expr: str) -> set[str]:
    """Series names in a PromQL expression: recording rules first, then the proxy's metrics."""
    rules = set(_RECORDING_RULE.findall(expr))
    rest = _RECORDING_RULE.sub(" ", expr)
    return rules | set(_PROXY_METRIC.findall(rest)) | set(_BUILTIN_METRIC.findall(rest))


def _selectors(expr: str) -> list[tuple[str, str]]:
    """(series name, matchers) for each selector of a known series in the expression."""
    return [
        (name, matchers or "") for name, matchers in _SELECTOR.findall(expr) if name in KNOWN_SERIES
    ]


def _unit(panel: dict[str, Any]) -> str | None:
    return panel.get("fieldConfig", {}).get("defaults", {}).get("unit")


def _is_share_panel(panel: dict[str, Any]) -> bool:
    return "share" in panel["title"].lower()


def _is_runway_panel(panel: dict[str, Any]) -> bool:
    # Days until a budget runs out: built from a spend rate, but a duration in days.
    return panel["title"].lower().startswith("days")


def _is_latency_panel(panel: dict[str, Any]) -> bool:
    names = {name for expr in _exprs(panel) for name in _metric_names(expr)}
    return not _is_share_panel(panel) and any("_seconds" in name for name in names)


def _is_cost_panel(panel: dict[str, Any]) -> bool:
    if not _is_prometheus(panel) or _is_share_panel(panel) or _is_runway_panel(panel):
        return False
    title = panel["title"].lower()
    return (
        "spend" in title or "cost" in title or any("llm_proxy_cost_usd" in e for e in _exprs(panel))
    )


# --- the checks -----------------------------------------------------------------------------


def _duplicate_panel_ids(dashboard: dict[str, Any]) -> list[int]:
    counts = Counter(panel.get("id") for panel in _panels(dashboard))
    return sorted(panel_id for panel_id, count in counts.items() if count > 1 or panel_id is None)


def _variable_problems(dashboard: dict[str, Any]) -> list[str]:
    variables = _variables(dashboard)
    problems = []
    datasource = variables.get("datasource")
    if datasource is None or (datasource["type"], datasource["query"]) != (
        "datasource",
        "prometheus",
    ):
        problems.append("no `datasource` variable of type datasource over prometheus")
    for name in FILTER_VARIABLES:
        variable = variables.get(name)
        if variable is None:
            problems.append(f"no `{name}` variable")
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        if variable["type"] != "query" or not query.startswith("label_values("):
            problems.append(f"`{name}` is not a label_values query variable")
        elif f", {name})" not in query or "llm_proxy_requests_total" not in query:
            problems.append(f"`{name}` does not list {name} values of llm_proxy_requests_total")
        if not (variable.get("multi") and variable.get("includeAll")):
            problems.append(f"`{name}` is not multi-value with All")
        if variable.get("allValue") != ".*":
            problems.append(f"`{name}` All value is not the regex .*")
        if variable.get("datasource") != PROMETHEUS_DATASOURCE:
            problems.append(f"`{name}` does not query the `datasource` variable")
    return problems


def _datasource_problems(dashboard: dict[str, Any]) -> list[str]:
    problems = []
    for panel in _panels(dashboard):
        if not _is_prometheus(panel):
            continue
        sources = [panel.get("datasource")]
        sources += [target.get("datasource", PROMETHEUS_DATASOURCE) for target in panel["targets"]]
        if any(source != PROMETHEUS_DATASOURCE for source in sources):
            problems.append(f"panel {panel['title']!r} does not use ${{datasource}}")
    return problems


def _filter_problems(dashboard: dict[str, Any]) -> list[str]:
    """In panel queries, each selector of a series carrying team/model/upstream filters it."""
    problems = []
    for expr in (expr for panel in _panels(dashboard) for expr in _exprs(panel)):
        for name, matchers in _selectors(expr):
            for label in FILTER_VARIABLES:
                if label in KNOWN_SERIES[name] and f'{label}=~"${label}"' not in matchers:
                    problems.append(f'{name}{matchers} lacks {label}=~"${label}"')
    return problems


def _unknown_metrics(dashboard: dict[str, Any]) -> list[str]:
    names = {name for expr in _all_exprs(dashboard) for name in _metric_names(expr)}
    return sorted(names - KNOWN_SERIES.keys())


def _unit_problems(dashboard: dict[str, Any]) -> list[str]:
    problems = []
    for panel in _panels(dashboard):
        if _is_share_panel(panel):
            expected = "percentunit"
        elif _is_runway_panel(panel):
            expected = "d"
        elif _is_latency_panel(panel):
            expected = "s"
        elif _is_cost_panel(panel):
            expected = "currencyUSD"
        else:
            continue
        if _unit(panel) != expected:
            problems.append(f"panel {panel['title']!r} has unit {_unit(panel)!r}, not {expected!r}")
    return problems


_SQL_WORDS = {
    "select", "from", "where", "and", "or", "not", "order", "by", "desc", "asc", "limit",
    "as", "extract", "is", "null", "sum", "count", "group", "coalesce", "in",
}  # fmt: skip
_SQL_NOISE = re.compile(r"'[^']*'|\$__\w+|\$\{[^}]*\}|\$\w+|\b\d+\b")


def _sql_problems(sql: str) -> list[str]:
    """Tables and columns a simple single-table SELECT names that the ledger does not have."""
    columns = _ledger_columns()
    text = _SQL_NOISE.sub(" ", sql.lower())
    text = re.sub(r"\bextract\s*\(\s*\w+\s+from\b", "extract(", text)  # not a table's FROM
    tables = re.findall(r"\b(?:from|join)\s+([a-z_][a-z0-9_]*)", text)
    problems = [f"no table {table!r}" for table in tables if table not in columns]
    aliases = set(re.findall(r"\bas\s+([a-z_][a-z0-9_]*)", text))
    known = set().union(*(columns.get(table, set()) for table in tables))
    for word in sorted(set(re.findall(r"\b[a-z_][a-z0-9_]*\b", text))):
        if word not in _SQL_WORDS | aliases | set(tables) | known:
            problems.append(f"no column {word!r} in {tables}")
    if not tables:
        problems.append("no table named")
    return problems


def _sql_targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (panel, target)
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        if "rawSql" in target
    ]


def _broken(name: str) -> dict[str, Any]:
    return copy.deepcopy(DASHBOARDS[name])


def _panel_titled(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    return next(panel for panel in _panels(dashboard) if panel["title"] == title)


parametrize_dashboards = pytest.mark.parametrize("name", sorted(DASHBOARDS))


# --- tests ------------------------------------------------------------------------------------


def test_the_four_dashboards_exist() -> None:
    assert set(DASHBOARDS) == EXPECTED_DASHBOARDS


def test_dashboard_uids_and_titles_are_unique_and_set() -> None:
    uids = [dashboard.get("uid") for dashboard in DASHBOARDS.values()]
    titles = [dashboard.get("title") for dashboard in DASHBOARDS.values()]
    assert all(uids) and all(titles)
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)


@parametrize_dashboards
def test_panel_ids_are_unique(name: str) -> None:
    assert _duplicate_panel_ids(DASHBOARDS[name]) == []


def test_duplicate_panel_ids_are_caught() -> None:
    dashboard = _broken("cost-overview.json")
    dashboard["panels"][1]["id"] = dashboard["panels"][0]["id"]
    assert _duplicate_panel_ids(dashboard) == [dashboard["panels"][0]["id"]]


@parametrize_dashboards
def test_dashboard_has_the_datasource_and_filter_variables(name: str) -> None:
    assert _variable_problems(DASHBOARDS[name]) == []


def test_a_missing_filter_variable_is_caught() -> None:
    dashboard = _broken("agents.json")
    dashboard["templating"]["list"] = [
        variable for variable in dashboard["templating"]["list"] if variable["name"] != "upstream"
    ]
    assert _variable_problems(dashboard) == ["no `upstream` variable"]


@parametrize_dashboards
def test_prometheus_panels_use_the_datasource_variable(name: str) -> None:
    assert _datasource_problems(DASHBOARDS[name]) == []


def test_a_panel_pinned_to_one_prometheus_is_caught() -> None:
    dashboard = _broken("latency-errors.json")
    dashboard["panels"][0]["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    assert len(_datasource_problems(dashboard)) == 1


@parametrize_dashboards
def test_queries_filter_on_the_team_model_and_upstream_variables(name: str) -> None:
    assert _filter_problems(DASHBOARDS[name]) == []


def test_an_unfiltered_query_is_caught() -> None:
    dashboard = _broken("cost-overview.json")
    target = dashboard["panels"][0]["targets"][0]
    target["expr"] = target["expr"].replace(', model=~"$model"', "")
    assert len(_filter_problems(dashboard)) == 1


@parametrize_dashboards
def test_queries_only_name_metrics_the_proxy_or_the_rules_define(name: str) -> None:
    assert _unknown_metrics(DASHBOARDS[name]) == []


def test_an_unknown_metric_is_caught() -> None:
    dashboard = _broken("latency-errors.json")
    target = dashboard["panels"][0]["targets"][0]
    target["expr"] = target["expr"].replace("_seconds_bucket", "_ms_bucket")
    assert _unknown_metrics(dashboard) == ["llm_proxy_request_duration_ms_bucket"]


def test_exported_metric_names_include_the_series_suffixes() -> None:
    assert "llm_proxy_requests_total" in KNOWN_SERIES
    assert "llm_proxy_trace_calls_bucket" in KNOWN_SERIES
    assert "llm_proxy_ledger_spooled_records" in KNOWN_SERIES
    assert "llm_proxy_requests" not in KNOWN_SERIES  # a counter is only queryable as _total


@parametrize_dashboards
def test_panels_have_sane_units(name: str) -> None:
    assert _unit_problems(DASHBOARDS[name]) == []


def test_cost_panels_are_in_dollars() -> None:
    cost_panels = [p for d in DASHBOARDS.values() for p in _panels(d) if _is_cost_panel(p)]
    assert len(cost_panels) >= 8
    assert {_unit(panel) for panel in cost_panels} == {"currencyUSD"}


def test_latency_panels_are_in_seconds() -> None:
    latency_panels = [p for d in DASHBOARDS.values() for p in _panels(d) if _is_latency_panel(p)]
    assert len(latency_panels) >= 5
    assert {_unit(panel) for panel in latency_panels} == {"s"}


def test_share_panels_are_fractions() -> None:
    share_panels = [p for d in DASHBOARDS.values() for p in _panels(d) if _is_share_panel(p)]
    assert len(share_panels) >= 4
    assert {_unit(panel) for panel in share_panels} == {"percentunit"}


def test_a_cost_panel_without_a_currency_is_caught() -> None:
    dashboard = _broken("cost-overview.json")
    _panel_titled(dashboard, "Top models by cost")["fieldConfig"]["defaults"]["unit"] = "short"
    assert _unit_problems(dashboard) == [
        "panel 'Top models by cost' has unit 'short', not 'currencyUSD'"
    ]


def test_a_latency_panel_in_milliseconds_is_caught() -> None:
    dashboard = _broken("latency-errors.json")
    _panel_titled(dashboard, "Proxy overhead p50/p99")["fieldConfig"]["defaults"]["unit"] = "ms"
    assert len(_unit_problems(dashboard)) == 1


def test_traces_table_reads_the_ledger() -> None:
    targets = _sql_targets(DASHBOARDS["agents.json"])
    assert len(targets) == 1
    panel, target = targets[0]
    assert panel["datasource"] == {"type": "postgres", "uid": "ledger"}
    assert target["format"] == "table"
    sql = target["rawSql"]
    assert "FROM traces" in sql
    assert "$__timeFilter(last_call_at)" in sql
    assert "ORDER BY cost_usd DESC" in sql


def test_sql_names_only_ledger_tables_and_columns() -> None:
    for dashboard in DASHBOARDS.values():
        for _, target in _sql_targets(dashboard):
            assert _sql_problems(target["rawSql"]) == []


def test_sql_naming_a_missing_column_is_caught() -> None:
    _, target = _sql_targets(DASHBOARDS["agents.json"])[0]
    sql = target["rawSql"].replace("unpriced_calls", "unpriced_requests")
    assert _sql_problems(sql) == ["no column 'unpriced_requests' in ['traces']"]
    assert _sql_problems("SELECT trace_id FROM trace_summaries") == [
        "no table 'trace_summaries'",
        "no column 'trace_id' in ['trace_summaries']",
    ]


def test_datasources_provisioning() -> None:
    datasources = {
        ds["uid"]: ds for ds in yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]
    }
    assert set(datasources) == {"prometheus", "ledger"}
    prometheus, ledger = datasources["prometheus"], datasources["ledger"]
    assert (prometheus["type"], prometheus["url"], prometheus["isDefault"]) == (
        "prometheus",
        "http://prometheus:9090",
        True,
    )
    assert (ledger["type"], ledger["url"], ledger["user"]) == (
        "postgres",
        "postgres:5432",
        "metering",
    )
    assert ledger["jsonData"]["database"] == "metering"
    assert ledger["jsonData"]["sslmode"] == "disable"
    assert ledger["secureJsonData"]["password"] == "${POSTGRES_PASSWORD}"


def test_dashboard_provider_loads_the_mounted_dashboards() -> None:
    providers = yaml.safe_load(DASHBOARD_PROVIDERS_FILE.read_text())["providers"]
    assert [(p["type"], p["options"]["path"]) for p in providers] == [("file", DASHBOARDS_MOUNT)]
