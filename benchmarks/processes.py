"""A server the benchmark starts, pinned to cores, and what it costs: CPU time and memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """One server process (and its worker children), started with `taskset -c cpus`."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        cpus: str,
        ready_url: str,
        log_path: Path,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self._command = ["taskset", "-c", cpus, *command]
        self._ready_url = ready_url
        self._log_path = log_path
        self._environment = {**os.environ, **(environment or {})}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_seconds: float = 120.0) -> None:
        """Start it and wait until `ready_url` answers 2xx (the log says why, if it never does)."""
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            self._command, env=self._environment, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self._log_path}")
            if _answers(self._ready_url):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.name} was not ready in {timeout_seconds:.0f} s; see {self._log_path}"
        )

    def stop(self, grace_seconds: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace_seconds`; the exit code."""
        if self._process is None or self._process.poll() is not None:
            return None if self._process is None else self._process.returncode
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            return self._process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            return self._process.wait()

    def pids(self) -> list[int]:
        """The process and all its descendants (uvicorn's workers)."""
        assert self._process is not None
        found, pending = [], [self._process.pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            children = Path(f"/proc/{pid}/task/{pid}/children")
            if children.exists():
                pending.extend(int(child) for child in children.read_text().split())
        return found

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far by the process and its workers."""
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return total / _TICKS_PER_SECOND

    def rss_bytes(self) -> int:
        """Resident memory of the process and its workers."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError):
        return False
