"""Plain (non-streamed) calls at a fixed concurrency, made by wrk from Debian's packages.

wrk sends the same POST on every connection; a Lua `done` hook prints its summary as one JSON
line, so nothing here parses wrk's human-readable output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from typing import Any

_MARKER = "BENCH-JSON "
_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
%(headers)s
done = function(summary, latency, requests)
  local p = function(q) return latency:percentile(q) / 1000 end
  io.write(string.format(
    '%(marker)s{"calls":%%d,"micros":%%d,"connect":%%d,"read":%%d,"write":%%d,'
    .. '"status":%%d,"timeout":%%d,"p50":%%f,"p90":%%f,"p99":%%f,"p99.9":%%f,"max":%%f}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    p(50), p(90), p(99), p(99.9), latency.max / 1000))
end
"""


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk")
    return found


def run_wrk(
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
    cpus: str,
) -> dict[str, Any]:
    """One wrk run (one thread, pinned to `cpus`), summarised like `loadgen`'s runs."""
    header_lines = "\n".join(
        f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()
    )
    script = _SCRIPT % {
        "body": body.decode(),
        "headers": header_lines,
        "marker": _MARKER,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as file:
        file.write(script)
        file.flush()
        command = [
            "taskset", "-c", cpus, wrk_path(), "-t1", f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", file.name, url,
        ]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith(_MARKER))
    raw = json.loads(line.removeprefix(_MARKER))
    seconds_taken = raw["micros"] / 1e6
    errors = {name: raw[name] for name in ("connect", "read", "write", "timeout") if raw[name]}
    return {
        "calls": raw["calls"],
        "ok_calls": raw["calls"] - raw["status"],
        "seconds": seconds_taken,
        "calls_per_second": raw["calls"] / seconds_taken,
        "errors": {**errors, **({"non_2xx": raw["status"]} if raw["status"] else {})},
        "latency_ms": {key: raw[key] for key in ("p50", "p90", "p99", "p99.9", "max")},
    }
