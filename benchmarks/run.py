"""`make bench`: the fake upstream directly and through each proxy, in one run, alternating.

The proxy under test gets one core (`--proxy-cpus`), the fake upstream and the load generators
the other (`--load-cpus`). Each scenario runs `--repetitions` times against every target, the
order of targets flipping each repetition, so a slow minute of the machine hits them alike.
Then, on the proxy alone: its memory before and after `--memory-calls` calls, and its ledger
(every metered call must be a row in Postgres once the queue has drained).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks import report
from benchmarks.postgres_affinity import postgres_pinned
from benchmarks.scenarios import CHAT, SCALE_OUT_SCENARIOS, SCENARIOS, measure, run_loadgen
from benchmarks.targets import Ledger, Target, command_proxy, fake_upstream, metering_proxy, scrape

PROXY = "metering-proxy"
SCALED_PROXY = "metering-proxy --workers 2"
LITELLM_DIR = Path(__file__).parent / "litellm"
_QUEUE_METRIC = "llm_proxy_ledger_queue_records"
_METERED_METRIC = "llm_proxy_requests_total"


class QueueWatch:
    """Samples the proxy's ledger queue while it is under load: the largest depth seen."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self.largest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(OSError):
                self.largest = max(self.largest, scrape(self._target.base_url, _QUEUE_METRIC))

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()


def run_scenarios(
    targets: list[Target], names: tuple[str, ...] | None, arguments: argparse.Namespace
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every scenario against every target, `repetitions` times, alternating the order."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for scenario in SCENARIOS:
        if names is not None and scenario.name not in names:
            continue
        per_target = runs.setdefault(scenario.name, {target.name: [] for target in targets})
        for repetition in range(arguments.repetitions):
            order = targets if repetition % 2 == 0 else targets[::-1]
            for target in order:
                summary = measure(scenario, target, arguments.seconds, arguments.load_cpus)
                per_target[target.name].append(summary)
                print(
                    f"{scenario.name:18} {target.name:28} {summary['calls_per_second']:9.0f}/s "
                    f"p50 {summary['latency_ms'].get('p50', 0):7.3f} ms",
                    file=sys.stderr,
                )
    return runs


def measure_memory(target: Target, calls: int, load_cpus: str) -> dict[str, Any]:
    """RSS before and after `calls` non-streamed calls at concurrency 64."""
    assert target.server is not None
    before = target.server.rss_bytes()
    run_loadgen(
        f"{target.base_url}/chat/completions",
        orjson.dumps(CHAT),
        target.headers,
        load_cpus,
        seconds=3600,
        calls=calls,
        concurrency=64,
    )
    after = target.server.rss_bytes()
    return {
        "before_bytes": before,
        "after_bytes": after,
        "growth_bytes": after - before,
        "calls": calls,
    }


def check_ledger(target: Target, rows_of: Callable[[], int], watch: QueueWatch) -> dict[str, Any]:
    """Wait (up to a minute) for every call the proxy metered to be a row in Postgres."""
    started = time.monotonic()
    metered = scrape(target.base_url, _METERED_METRIC)
    rows = rows_of()
    while rows < metered and time.monotonic() - started < 60:
        time.sleep(0.2)
        rows = rows_of()
    return {
        "metered_calls": int(metered),
        "rows": rows,
        "largest_queue": int(watch.largest),
        "drain_seconds": time.monotonic() - started,
    }


def warm_up(target: Target, load_cpus: str) -> None:
    """Open connections and fill caches before anything is measured."""
    run_loadgen(
        f"{target.base_url}/chat/completions",
        orjson.dumps(CHAT),
        target.headers,
        load_cpus,
        2.0,
        concurrency=16,
    )


def benchmark(arguments: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"scenarios": {}, "memory": {}, "ledger": {}, "checks": {}}
    ledger = Ledger()
    ledger.create()
    try:
        with contextlib.ExitStack() as stack:
            if arguments.pin_postgres:
                stack.enter_context(postgres_pinned(arguments.load_cpus))
            direct = stack.enter_context(fake_upstream(arguments.load_cpus, work_dir))
            proxy = stack.enter_context(
                metering_proxy(PROXY, direct.base_url, arguments.proxy_cpus, 1, work_dir, ledger)
            )
            others = [
                stack.enter_context(
                    command_proxy(
                        name,
                        command,
                        arguments.ready_path,
                        direct.base_url,
                        arguments.proxy_cpus,
                        work_dir,
                    )
                )
                for name, command in _compared(arguments)
            ]
            targets = [direct, proxy, *others]
            for target in targets[1:]:
                warm_up(target, arguments.load_cpus)
            watch = QueueWatch(proxy)
            with watch.running():
                results["memory"][PROXY] = measure_memory(
                    proxy, arguments.memory_calls, arguments.load_cpus
                )
                runs = run_scenarios(targets, arguments.scenario, arguments)
            results["ledger"][PROXY] = check_ledger(proxy, ledger.rows, watch)
        if arguments.scale_out:
            runs = _merge(runs, _scale_out(arguments, work_dir, ledger, results))
    finally:
        ledger.drop()
    results["targets"] = [target.name for target in targets] + (
        [SCALED_PROXY] if arguments.scale_out else []
    )
    for name, per_target in runs.items():
        summaries = {target: report.summarise(found) for target, found in per_target.items()}
        results["scenarios"][name] = {
            "runs": per_target,
            "summary": summaries,
            "added": {
                target: report.added(summary, summaries["direct"])
                for target, summary in summaries.items()
                if target != "direct"
            },
        }
    results["checks"][PROXY] = report.check_targets(results, PROXY)
    return results


def _scale_out(
    arguments: argparse.Namespace, work_dir: Path, ledger: Ledger, results: dict[str, Any]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The proxy with two workers on both cores (the load shares them), at full concurrency."""
    all_cpus = f"{arguments.proxy_cpus},{arguments.load_cpus}"
    with (
        fake_upstream(arguments.load_cpus, work_dir) as direct,
        metering_proxy(SCALED_PROXY, direct.base_url, all_cpus, 2, work_dir, ledger) as scaled,
    ):
        before = ledger.rows()  # before the warm-up, whose calls are metered too
        warm_up(scaled, arguments.load_cpus)
        watch = QueueWatch(scaled)
        with watch.running():
            runs = run_scenarios([scaled], SCALE_OUT_SCENARIOS, arguments)
        # The scaled proxy shares the run's database: its rows are those added since it started.
        results["ledger"][SCALED_PROXY] = check_ledger(
            scaled, lambda: ledger.rows() - before, watch
        )
    return runs


def _merge(
    runs: dict[str, dict[str, list[dict[str, Any]]]],
    more: dict[str, dict[str, list[dict[str, Any]]]],
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    for name, per_target in more.items():
        runs.setdefault(name, {}).update(per_target)
    return runs


def _compared(arguments: argparse.Namespace) -> list[tuple[str, str]]:
    """The other proxies to measure: (name, start command) for each."""
    compared = []
    for item in arguments.compare:
        name, _, command = item.partition("=")
        compared.append((name, command))
    if arguments.litellm:
        installer = LITELLM_DIR / "install.sh"
        litellm = (
            subprocess.run(["bash", str(installer)], check=True, capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        compared.append(("litellm", f"{LITELLM_DIR / 'start.sh'} {litellm} {{port}} {{upstream}}"))
    return compared


def _machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
    }


def write_results(results: dict[str, Any], output_dir: Path, command: str) -> None:
    machine = results["machine"]
    header = [
        "# Benchmark results",
        "",
        f"- Date: {results['date']}",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}, "
        f"Python {machine['python']}; commit {machine['commit']}",
        f"- Command: `{command}`",
        f"- Each figure is the median of {results['repetitions']} runs of "
        f"{results['seconds']:g} s; ±spread is (max - min) / median over those runs.",
        "- Latencies in ms; 'added' is the proxy's median minus the direct call's median.",
        "",
    ]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "RESULTS.md").write_text("\n".join(header) + report.markdown(results))
    (output_dir / "results.json").write_text(json.dumps(results, indent=1))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per run (default 10)")
    parser.add_argument("--repetitions", type=int, default=3, help="runs per scenario (3)")
    parser.add_argument("--memory-calls", type=int, default=100_000)
    parser.add_argument("--scenario", action="append", help="only these (repeatable)")
    parser.add_argument("--proxy-cpus", default="0")
    parser.add_argument("--load-cpus", default="1")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent)
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="another proxy: a shell command with {port} and {upstream} (its /v1 base URL)",
    )
    parser.add_argument("--ready-path", default="/health/readiness", help="for --compare")
    parser.add_argument(
        "--litellm", action="store_true", help="also measure LiteLLM (installed in its own venv)"
    )
    parser.add_argument(
        "--no-scale-out", dest="scale_out", action="store_false", help="skip --workers 2"
    )
    parser.add_argument(
        "--no-pin-postgres",
        dest="pin_postgres",
        action="store_false",
        help="leave the local Postgres free to run on the proxy's core",
    )
    return parser


def main() -> None:
    arguments = _parser().parse_args()
    if arguments.scenario is not None:
        arguments.scenario = tuple(arguments.scenario)
    with tempfile.TemporaryDirectory(prefix="metering-bench-") as work_dir:
        results = benchmark(arguments, Path(work_dir))
    results["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results["machine"] = _machine()
    results["seconds"] = arguments.seconds
    results["repetitions"] = arguments.repetitions
    write_results(results, arguments.output_dir, "python -m benchmarks " + " ".join(sys.argv[1:]))
    print(report.markdown(results))
