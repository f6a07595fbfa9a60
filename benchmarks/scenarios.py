"""The measured scenarios, and how one scenario is measured against one target."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import orjson

from benchmarks.fake_upstream import EMBEDDING_MODEL, MODEL
from benchmarks.targets import Target
from benchmarks.wrk import run_wrk

_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant for a platform team."},
    {"role": "user", "content": "In one sentence: why meter every LLM call?"},
]
CHAT = {"model": MODEL, "messages": _MESSAGES, "max_tokens": 64, "user": "bench-user"}
STREAM = {**CHAT, "stream": True}
STREAM_WITH_USAGE = {**STREAM, "stream_options": {"include_usage": True}}
EMBEDDINGS = {"model": EMBEDDING_MODEL, "input": "The quick brown fox jumps over the lazy dog."}


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    path: str  # under /v1
    body: dict[str, Any]
    concurrency: int
    streamed: bool = False
    rate: float | None = None  # open loop: calls started per second

    @property
    def tool(self) -> str:
        """wrk for plain calls; the async load generator for streams and a fixed rate."""
        return "loadgen" if self.streamed or self.rate else "wrk"


SCENARIOS = (
    Scenario("chat-c1", "chat, concurrency 1", "chat/completions", CHAT, 1),
    Scenario("chat-c16", "chat, concurrency 16", "chat/completions", CHAT, 16),
    Scenario("chat-c64", "chat, concurrency 64", "chat/completions", CHAT, 64),
    Scenario("stream-c1", "stream, usage not asked, c=1", "chat/completions", STREAM, 1, True),
    Scenario("stream-c16", "stream, usage not asked, c=16", "chat/completions", STREAM, 16, True),
    Scenario(
        "stream-usage-c1",
        "stream, usage asked, c=1",
        "chat/completions",
        STREAM_WITH_USAGE,
        1,
        True,
    ),
    Scenario(
        "stream-usage-c16",
        "stream, usage asked, c=16",
        "chat/completions",
        STREAM_WITH_USAGE,
        16,
        True,
    ),
    Scenario("stream-c64", "stream, usage not asked, c=64", "chat/completions", STREAM, 64, True),
    Scenario("embeddings-c16", "embeddings, concurrency 16", "embeddings", EMBEDDINGS, 16),
    Scenario(
        "chat-rate-500", "chat at a fixed 500 calls/s", "chat/completions", CHAT, 0, rate=500.0
    ),
)
SCALE_OUT_SCENARIOS = ("chat-c64", "stream-c64")


def measure(scenario: Scenario, target: Target, seconds: float, load_cpus: str) -> dict[str, Any]:
    """One run of `scenario` against `target`, with the target's CPU time per call."""
    url = f"{target.base_url}/{scenario.path}"
    body = orjson.dumps(scenario.body)
    cpu_before = target.server.cpu_seconds() if target.server else 0.0
    if scenario.tool == "wrk":
        summary = run_wrk(url, body, target.headers, scenario.concurrency, seconds, load_cpus)
    else:
        summary = run_loadgen(url, body, target.headers, load_cpus, seconds, scenario)
    if target.server is not None and summary["calls"]:
        cpu = target.server.cpu_seconds() - cpu_before
        summary["cpu_ms_per_call"] = cpu * 1000 / summary["calls"]
    return summary


def run_loadgen(
    url: str,
    body: bytes,
    headers: dict[str, str],
    load_cpus: str,
    seconds: float,
    scenario: Scenario | None = None,
    calls: int | None = None,
    concurrency: int = 1,
) -> dict[str, Any]:
    """`benchmarks.loadgen` in its own process on the load cores; its JSON summary."""
    with tempfile.NamedTemporaryFile(suffix=".json") as body_file:
        body_file.write(body)
        body_file.flush()
        command = ["taskset", "-c", load_cpus, sys.executable, "-m", "benchmarks.loadgen", url]
        command += ["--body-file", body_file.name, "--seconds", str(seconds)]
        command += [f"--header={name}: {value}" for name, value in headers.items()]
        if scenario is not None:
            concurrency = scenario.concurrency
            if scenario.rate:
                command += ["--rate", str(scenario.rate)]
        command += ["--concurrency", str(concurrency)]
        if calls is not None:
            command += ["--calls", str(calls)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    summary: dict[str, Any] = json.loads(output)
    return summary
