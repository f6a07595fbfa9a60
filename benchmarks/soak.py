"""`make soak`: a bounded soak of a real proxy process, checked for leaks and for lost records.

`metering-proxy serve` (one worker, its ledger in a Postgres database made for the run) sits in
front of the fast fake upstream. Calls start at a steady rate whatever the answers do (open
loop): plain chat calls, streams with and without usage asked for, and now and then a stream the
client abandons after its first event. Every few seconds the proxy's RSS, open file descriptors
and ledger queue are sampled. At the end it reports the calls made, the errors (the fake
upstream never fails, so every error is the proxy's), the RSS curve (start, max, end, and its
slope over the second half of the run), the descriptors at the start and once the proxy has
been idle for a while, and whether every call is exactly one row in Postgres, abandoned ones
included. It writes `SOAK.md` and `soak.json`, and exits 1 if a check fails.

Run: `python -m benchmarks.soak --seconds 600 --rate 100` (`--trace-idle-seconds` shorter than the
proxy's 300 s default lets a short soak reach its steady state).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
import uvloop

from benchmarks.loadgen import run_on_schedule
from benchmarks.processes import Server
from benchmarks.run import _machine
from benchmarks.scenarios import CHAT, STREAM, STREAM_WITH_USAGE
from benchmarks.stats import percentiles
from benchmarks.targets import POSTGRES, Ledger, Target, fake_upstream, metering_proxy, scrape

PROXY = "metering-proxy"
MB = 1024 * 1024
_QUEUE_METRIC = "llm_proxy_ledger_queue_records"
_MAX_OPEN_CALLS = 1000
_DRAIN_SECONDS = 60.0
# The last sample waits this long after the load, so that pooled connections left idle are
# closed (aiohttp keeps an upstream connection 15 s, uvicorn a client's 5 s): what stays open
# then is a leak.
_IDLE_SECONDS = 20.0
# The checks' limits. RSS grows by design until the first calls' traces finish (every call is an
# open trace for `--trace-idle-seconds`, 30,000 of them at 100 calls/s and the proxy's default
# 300 s), so only the second half of the run is fitted, and the run should be at least twice the
# trace idle time. A leak of 100 bytes a call at 100 calls/s is 0.6 MB a minute.
MAX_RSS_SLOPE_MB_PER_MINUTE = 1.0
# Descriptors that may still differ between start and end: the database pool's connections.
FD_SLACK = 8

# The calls, in turn; every `--abandon-every`th call is a stream the client hangs up on.
_CYCLE = (("chat", CHAT), ("stream", STREAM), ("chat", CHAT), ("stream-usage", STREAM_WITH_USAGE))
_BODIES = {kind: orjson.dumps(body) for kind, body in _CYCLE}
# The fake upstream's pause between the events of an abandoned stream: long enough that the
# client hangs up while the proxy is still relaying, not after the whole answer has gone by.
_ABANDONED_HEADERS = {"x-fake-event-delay-ms": "20"}


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the load started
    rss_bytes: int
    open_fds: int
    ledger_queue: int


@dataclass
class Tally:
    """What the clients saw."""

    calls: Counter[str] = field(default_factory=Counter)  # by kind
    errors: Counter[str] = field(default_factory=Counter)
    request_ids: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # whole answers, from schedule


def kind_of(index: int, abandon_every: int) -> str:
    if index % abandon_every == abandon_every - 1:
        return "abandoned"
    return _CYCLE[index % len(_CYCLE)][0]


async def one_call(client: httpx.AsyncClient, kind: str, due: float, tally: Tally) -> None:
    """Make one call and tally it; never raises for what the proxy answers."""
    tally.calls[kind] += 1
    abandoned = kind == "abandoned"
    body = _BODIES["stream" if abandoned else kind]
    headers = _ABANDONED_HEADERS if abandoned else None
    try:
        async with client.stream(
            "POST", "chat/completions", content=body, headers=headers
        ) as response:
            tally.request_ids.append(response.headers.get("x-metering-request-id", ""))
            if response.status_code != 200:
                tally.errors[f"status {response.status_code}"] += 1
                return
            if abandoned:
                async for _ in response.aiter_raw():
                    # Leaving the block with the answer unread closes the connection.
                    return
            answer = await response.aread()
    except httpx.HTTPError as error:
        tally.errors[type(error).__name__] += 1
        return
    if kind.startswith("stream") and not answer.endswith(b"data: [DONE]\n\n"):
        tally.errors["stream cut short"] += 1
        return
    tally.latencies.append(time.perf_counter() - due)


async def open_loop(target: Target, rate: float, seconds: float, abandon_every: int) -> Tally:
    """Calls started `rate` times a second, on schedule, whatever the answers do."""
    tally = Tally()
    limits = httpx.Limits(max_connections=_MAX_OPEN_CALLS, max_keepalive_connections=64)
    headers = {**target.headers, "Content-Type": "application/json"}
    async with httpx.AsyncClient(
        base_url=target.base_url, headers=headers, limits=limits, timeout=30
    ) as client:
        overloaded = await run_on_schedule(
            rate,
            seconds,
            _MAX_OPEN_CALLS,
            lambda index, due: one_call(client, kind_of(index, abandon_every), due, tally),
        )
    if overloaded:
        tally.errors["overloaded: call not started"] += overloaded
    return tally


def take_sample(server: Server, target: Target, started: float) -> Sample:
    return Sample(
        seconds=time.monotonic() - started,
        rss_bytes=server.rss_bytes(),
        open_fds=sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in server.pids()),
        ledger_queue=int(scrape(target.base_url, _QUEUE_METRIC)),
    )


async def sample_until(
    stop: asyncio.Event, take: Callable[[], Sample], every: float, samples: list[Sample]
) -> None:
    while not stop.is_set():
        samples.append(await asyncio.to_thread(take))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def soak(
    target: Target, arguments: argparse.Namespace, samples: list[Sample], started: float
) -> Tally:
    """The load, with the sampler running beside it."""
    assert target.server is not None
    server = target.server
    stop = asyncio.Event()
    sampler = asyncio.create_task(
        sample_until(
            stop, lambda: take_sample(server, target, started), arguments.sample_seconds, samples
        )
    )
    try:
        return await open_loop(target, arguments.rate, arguments.seconds, arguments.abandon_every)
    finally:
        stop.set()
        await sampler


def stored(ledger: Ledger) -> tuple[list[str], dict[str, int]]:
    """The request ids in the ledger, and how many rows have each status."""

    async def fetch() -> tuple[list[str], dict[str, int]]:
        connection = await asyncpg.connect(**POSTGRES, database=ledger.name)
        try:
            ids = await connection.fetch("SELECT request_id FROM usage_records")
            statuses = await connection.fetch(
                "SELECT status, count(*) FROM usage_records GROUP BY status ORDER BY status"
            )
        finally:
            await connection.close()
        return [row[0] for row in ids], {row[0]: row[1] for row in statuses}

    return asyncio.run(fetch())


def wait_for_rows(ledger: Ledger, expected: int) -> float:
    """Seconds until the ledger holds `expected` rows (or `_DRAIN_SECONDS` passed)."""
    started = time.monotonic()
    while ledger.rows() < expected and time.monotonic() - started < _DRAIN_SECONDS:
        time.sleep(0.25)
    return time.monotonic() - started


def slope_mb_per_minute(samples: list[Sample]) -> float:
    """The least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    fit = statistics.linear_regression(
        [sample.seconds for sample in samples], [sample.rss_bytes for sample in samples]
    )
    return fit.slope * 60 / MB


def summarise(
    tally: Tally, samples: list[Sample], ids: list[str], statuses: dict[str, int]
) -> dict[str, Any]:
    calls = sum(tally.calls.values())
    errors = sum(tally.errors.values())
    during_load = samples[:-1]  # the last one is taken once the proxy has been idle a while
    second_half = [
        sample for sample in during_load if sample.seconds >= during_load[-1].seconds / 2
    ]
    rss = [sample.rss_bytes for sample in samples]
    slope = slope_mb_per_minute(second_half)
    start_fds, end_fds = samples[0].open_fds, samples[-1].open_fds
    once = sorted(ids) == sorted(tally.request_ids) and len(set(ids)) == len(ids)
    checks = [
        ("no errors", errors == 0, f"{errors} errors"),
        ("every call stored exactly once", once and len(ids) == calls, f"{len(ids)} rows"),
        (
            f"RSS slope over the second half ≤ {MAX_RSS_SLOPE_MB_PER_MINUTE} MB/min",
            slope <= MAX_RSS_SLOPE_MB_PER_MINUTE,
            f"{slope:+.2f} MB/min",
        ),
        (
            f"open fds at the end ≤ start + {FD_SLACK}",
            end_fds <= start_fds + FD_SLACK,
            f"{start_fds} → {end_fds}",
        ),
    ]
    return {
        "calls": calls,
        "calls_by_kind": dict(tally.calls),
        "errors": dict(tally.errors),
        "latency_ms": percentiles(tally.latencies),
        "rows": len(ids),
        "distinct_rows": len(set(ids)),
        "statuses": statuses,
        "rss_mb": {
            "start": rss[0] / MB,
            "max": max(rss) / MB,
            "end": rss[-1] / MB,
            "slope_second_half_mb_per_minute": slope,
            "slope_whole_run_mb_per_minute": slope_mb_per_minute(during_load),
        },
        "open_fds": {"start": start_fds, "max": max(s.open_fds for s in samples), "end": end_fds},
        "largest_ledger_queue": max(sample.ledger_queue for sample in samples),
        "samples": [asdict(sample) for sample in samples],
        "checks": [{"check": name, "ok": ok, "figure": figure} for name, ok, figure in checks],
    }


def markdown(results: dict[str, Any]) -> str:
    rss, fds = results["rss_mb"], results["open_fds"]
    latency = results["latency_ms"]
    lines = [
        "# Soak results",
        "",
        f"- Date: {results['date']}; command: `{results['command']}`",
        f"- Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"commit {results['machine']['commit']}",
        f"- {results['seconds']:g} s at {results['rate']:g} calls/s (open loop): "
        f"{results['calls']} calls ({_counts(results['calls_by_kind'])}), "
        f"errors: {_counts(results['errors']) or 'none'}",
        f"- Latency of whole answers: p50 {latency.get('p50', 0):.2f} ms, "
        f"p99 {latency.get('p99', 0):.2f} ms, max {latency.get('max', 0):.1f} ms",
        f"- RSS: start {rss['start']:.1f} MB, max {rss['max']:.1f} MB, end {rss['end']:.1f} MB; "
        f"slope {rss['slope_second_half_mb_per_minute']:+.2f} MB/min over the second half "
        f"({rss['slope_whole_run_mb_per_minute']:+.2f} over the whole run, which includes the "
        f"first {results['trace_idle_seconds']:g} s of open traces filling up)",
        f"- Open fds: start {fds['start']}, max {fds['max']}, end {fds['end']}",
        f"- Ledger: {results['rows']} rows for {results['calls']} calls "
        f"({_counts(results['statuses'])}); largest queue {results['largest_ledger_queue']}, "
        f"drained {results['drain_seconds']:.1f} s after the load",
        "",
        "| check | figure | ok |",
        "|---|---|---|",
        *(
            f"| {check['check']} | {check['figure']} | {'yes' if check['ok'] else 'NO'} |"
            for check in results["checks"]
        ),
        "",
        "| seconds | RSS MB | open fds | ledger queue |",
        "|---:|---:|---:|---:|",
        *(
            f"| {sample['seconds']:.0f} | {sample['rss_bytes'] / MB:.1f} | "
            f"{sample['open_fds']} | {sample['ledger_queue']} |"
            for sample in _spread(results["samples"], 21)
        ),
        "",
    ]
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def _spread(items: list[Any], at_most: int) -> list[Any]:
    """About `at_most` items, evenly spread, the first and the last among them."""
    if len(items) <= at_most:
        return items
    step = (len(items) - 1) / (at_most - 1)
    return [items[round(index * step)] for index in range(at_most)]


def run(arguments: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    ledger = Ledger()
    ledger.create()
    samples: list[Sample] = []
    try:
        with (
            fake_upstream(arguments.load_cpus, work_dir) as upstream,
            metering_proxy(
                PROXY,
                upstream.base_url,
                arguments.proxy_cpus,
                1,
                work_dir,
                ledger,
                f"trace_idle_seconds = {arguments.trace_idle_seconds}\n",
            ) as proxy,
        ):
            assert proxy.server is not None
            started = time.monotonic()
            tally = uvloop.run(soak(proxy, arguments, samples, started))
            drain_seconds = wait_for_rows(ledger, sum(tally.calls.values()))
            time.sleep(_IDLE_SECONDS)
            samples.append(take_sample(proxy.server, proxy, started))
        ids, statuses = stored(ledger)
    finally:
        ledger.drop()
    return {**summarise(tally, samples, ids, statuses), "drain_seconds": drain_seconds}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=600.0, help="of load (default 600)")
    parser.add_argument("--rate", type=float, default=100.0, help="calls started a second (100)")
    parser.add_argument("--abandon-every", type=int, default=50, help="one stream in N (50)")
    parser.add_argument("--sample-seconds", type=float, default=2.0)
    parser.add_argument(
        "--trace-idle-seconds",
        type=float,
        default=300.0,
        help="the proxy's trace_idle_seconds (its default, 300); at most half of --seconds",
    )
    parser.add_argument("--proxy-cpus", default="0")
    parser.add_argument("--load-cpus", default="1")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent)
    return parser


def main() -> None:
    arguments = _parser().parse_args()
    # The clients share the fake upstream's cores, not the proxy's.
    os.sched_setaffinity(0, {int(cpu) for cpu in arguments.load_cpus.split(",")})
    with tempfile.TemporaryDirectory(prefix="metering-soak-") as work_dir:
        results = run(arguments, Path(work_dir))
    results |= {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.soak " + " ".join(sys.argv[1:]),
        "machine": _machine(),
        "seconds": arguments.seconds,
        "rate": arguments.rate,
        "trace_idle_seconds": arguments.trace_idle_seconds,
    }
    arguments.output_dir.mkdir(parents=True, exist_ok=True)
    (arguments.output_dir / "SOAK.md").write_text(markdown(results))
    (arguments.output_dir / "soak.json").write_text(json.dumps(results, indent=1))
    failed = [check["check"] for check in results["checks"] if not check["ok"]]
    print(markdown(results))
    if failed:
        print(f"soak: failed: {'; '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
