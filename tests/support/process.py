"""`metering-proxy serve` as a real process, the way users and orchestrators run it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

CLI = str(Path(sys.executable).with_name("metering-proxy"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ProxyProcess:
    """One `serve` process on a free port; its output goes to `log` in `cwd`; `preexec_fn` runs
    in the child before `serve` starts (to lower a resource limit, say)."""

    def __init__(
        self,
        *arguments: str,
        cwd: Path,
        environ: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("METERING_", "OPENAI_"))
        }
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [CLI, "serve", "--port", str(self.port), *arguments],
                cwd=cwd,
                env={**inherited, **(environ or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec_fn,
            )

    def wait_ready(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert self._process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the proxy did not become ready"
            time.sleep(0.1)

    def terminate(self, seconds: float = 30) -> int:
        """SIGTERM, as an orchestrator stops it; the exit code."""
        self.send_sigterm()
        return self.wait(seconds)

    def send_sigterm(self) -> None:
        self._process.send_signal(signal.SIGTERM)

    def wait(self, seconds: float = 30) -> int:
        """The exit code, once the process has ended."""
        return self._process.wait(timeout=seconds)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown at all."""
        self._process.kill()
        self._process.wait(timeout=10)


@contextmanager
def serving(*arguments: str, cwd: Path, environ: Mapping[str, str] | None = None) -> Iterator[str]:
    """A ready proxy process for the block; it must then stop cleanly on SIGTERM."""
    process = ProxyProcess(*arguments, cwd=cwd, environ=environ)
    try:
        process.wait_ready()
        yield process.url
    finally:
        assert process.terminate() == 0, process.log.read_text()
