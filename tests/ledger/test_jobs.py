"""Periodic ledger jobs carry on through database failures."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import OperationalError

from proxy.ledger.jobs import run_every


async def test_a_failing_job_runs_again_on_schedule() -> None:
    runs: list[int] = []
    third_run = asyncio.Event()

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise OperationalError("SELECT 1", {}, OSError("connection refused"))
        if len(runs) == 3:
            third_run.set()

    task = asyncio.create_task(run_every(0.01, job, "test"))
    await asyncio.wait_for(third_run.wait(), timeout=5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert runs[:3] == [0, 1, 2]
