"""Keep the local Postgres off the proxy's core while measuring.

In a deployment the database runs elsewhere; here it shares the machine, and the kernel would
otherwise run the ledger's inserts on the very core the proxy is measured on. Postgres forks a
backend per connection from its postmaster, so pinning the running processes (postmaster
included) pins the backends that come later too. The affinity each had is put back at the end.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def cpu_set(cpus: str) -> set[int]:
    """`taskset`'s list syntax ('1', '0,1', '2-3') as a set of CPU numbers."""
    found: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


@contextlib.contextmanager
def postgres_pinned(cpus: str) -> Iterator[None]:
    before: dict[int, set[int]] = {}
    for pid in _postgres_pids():
        try:
            before[pid] = os.sched_getaffinity(pid)
            os.sched_setaffinity(pid, cpu_set(cpus))
        except OSError as error:
            print(
                f"cannot pin Postgres process {pid} ({error}); it may share the proxy's core",
                file=sys.stderr,
            )
    try:
        yield
    finally:
        for pid, cpus_before in before.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, cpus_before)
