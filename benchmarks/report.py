"""The run's results: medians over repetitions, what the proxy adds, the targets, as JSON and
as the markdown table in `RESULTS.md`."""

from __future__ import annotations

from typing import Any

from benchmarks.stats import median_and_spread

MB = 1024 * 1024


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread of each figure over a scenario's repeated runs against one target."""

    def figure(pick: Any) -> dict[str, float] | None:
        values = [value for run in runs if (value := pick(run)) is not None]
        if not values:
            return None
        median, spread = median_and_spread(values)
        return {"median": median, "spread": spread}

    return {
        "calls_per_second": figure(lambda run: run["calls_per_second"]),
        "p50_ms": figure(lambda run: run["latency_ms"].get("p50")),
        "p99_ms": figure(lambda run: run["latency_ms"].get("p99")),
        "first_byte_p50_ms": figure(lambda run: run.get("first_byte_ms", {}).get("p50")),
        "cpu_ms_per_call": figure(lambda run: run.get("cpu_ms_per_call")),
        "failed_calls": sum(run["calls"] - run["ok_calls"] for run in runs),
    }


def added(proxy: dict[str, Any], direct: dict[str, Any]) -> dict[str, float | None]:
    """What going through the proxy adds to each latency figure (medians subtracted)."""

    def difference(key: str) -> float | None:
        if proxy.get(key) is None or direct.get(key) is None:
            return None
        return float(proxy[key]["median"] - direct[key]["median"])

    return {key: difference(key) for key in ("p50_ms", "p99_ms", "first_byte_p50_ms")}


def check_targets(results: dict[str, Any], proxy: str) -> list[dict[str, Any]]:
    """Issue 7's targets for this proxy, one per row: the goal, the figure, and whether it holds."""
    scenarios = results["scenarios"]

    def added_figure(scenario: str, key: str) -> float | None:
        found = scenarios.get(scenario, {}).get("added", {}).get(proxy, {})
        value: float | None = found.get(key)
        return value

    def median(scenario: str, key: str) -> float | None:
        found = scenarios.get(scenario, {}).get("summary", {}).get(proxy, {}).get(key)
        return None if found is None else float(found["median"])

    memory = results.get("memory", {}).get(proxy)
    ledger = results.get("ledger", {}).get(proxy)
    rows = [
        ("added p50 at concurrency 1", added_figure("chat-c1", "p50_ms"), "≤", 0.7, "ms"),
        ("added p99 at concurrency 1", added_figure("chat-c1", "p99_ms"), "≤", 2.0, "ms"),
        (
            "stream: added first-byte p50 (usage not asked)",
            added_figure("stream-c1", "first_byte_p50_ms"),
            "≤",
            0.7,
            "ms",
        ),
        (
            "stream: added first-byte p50 (usage asked)",
            added_figure("stream-usage-c1", "first_byte_p50_ms"),
            "≤",
            0.7,
            "ms",
        ),
        ("calls/s at concurrency 64", median("chat-c64", "calls_per_second"), "≥", 2000, ""),
        ("streams/s at concurrency 64", median("stream-c64", "calls_per_second"), "≥", 400, ""),
        ("CPU per call at concurrency 64", median("chat-c64", "cpu_ms_per_call"), "≤", 0.5, "ms"),
        (
            "RSS growth over the memory run",
            None if memory is None else memory["growth_bytes"] / MB,
            "≤",
            30,
            "MB",
        ),
    ]
    checks = [
        {
            "goal": goal,
            "value": value,
            "limit": f"{sign} {limit:g} {unit}".strip(),
            "holds": value is not None and (value <= limit if sign == "≤" else value >= limit),
        }
        for goal, value, sign, limit, unit in rows
    ]
    if ledger is not None:
        checks.append(
            {
                "goal": "every metered call in Postgres after the run",
                "value": ledger["rows"],
                "limit": f"= {ledger['metered_calls']}",
                "holds": ledger["rows"] == ledger["metered_calls"],
            }
        )
    return checks


def _cell(figure: dict[str, float] | None, digits: int, spread: bool = False) -> str:
    if figure is None:
        return "-"
    text = f"{figure['median']:,.{digits}f}"
    return f"{text} ±{figure['spread'] * 100:.0f}%" if spread else text


def markdown(results: dict[str, Any]) -> str:
    """The tables of `RESULTS.md` (the caller adds the date, machine and commands above them)."""
    targets: list[str] = results["targets"]
    lines = [
        "| scenario | target | calls/s (±spread) | p50 ms | p99 ms | first byte p50 ms "
        "| CPU ms/call | added p50 ms | added p99 ms | added first byte ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, scenario in results["scenarios"].items():
        for target in targets:
            summary = scenario["summary"].get(target)
            if summary is None:
                continue
            extra = scenario["added"].get(target, {})
            lines.append(
                f"| {name} | {target} | {_cell(summary['calls_per_second'], 0, spread=True)} "
                f"| {_cell(summary['p50_ms'], 3)} | {_cell(summary['p99_ms'], 3)} "
                f"| {_cell(summary['first_byte_p50_ms'], 3)} "
                f"| {_cell(summary['cpu_ms_per_call'], 3)} | "
                + " | ".join(
                    "-" if extra.get(key) is None else f"{extra[key]:.3f}"
                    for key in ("p50_ms", "p99_ms", "first_byte_p50_ms")
                )
                + " |"
            )
    lines += ["", "| target | RSS before | RSS after | growth | calls |", "|---|---|---|---|---|"]
    for target, memory in results.get("memory", {}).items():
        lines.append(
            f"| {target} | {memory['before_bytes'] / MB:.1f} MB | {memory['after_bytes'] / MB:.1f} "
            f"MB | {memory['growth_bytes'] / MB:+.1f} MB | {memory['calls']:,} |"
        )
    lines += [
        "",
        "| ledger of | metered calls | rows in Postgres | largest queue seen | drained in |",
        "|---|---|---|---|---|",
    ]
    for target, ledger in results.get("ledger", {}).items():
        lines.append(
            f"| {target} | {ledger['metered_calls']:,} | {ledger['rows']:,} "
            f"| {ledger['largest_queue']:,} | {ledger['drain_seconds']:.1f} s |"
        )
    for proxy, checks in results.get("checks", {}).items():
        lines += ["", f"Targets for {proxy}:", "", "| goal | measured | target | holds |"]
        lines.append("|---|---|---|---|")
        for check in checks:
            value = check["value"]
            shown = "-" if value is None else f"{value:,.3f}".rstrip("0").rstrip(".")
            lines.append(
                f"| {check['goal']} | {shown} | {check['limit']} "
                f"| {'yes' if check['holds'] else '**no**'} |"
            )
    return "\n".join(lines) + "\n"
