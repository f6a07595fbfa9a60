"""The report runner: reports run in a process of their own, end at their deadline or when their
caller leaves, and a process that dies or will not stop is replaced."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.api.report_runner.messages import WorkerConfig
from proxy.api.report_runner.runner import ReportRunner, ReportTimedOut
from proxy.api.report_runner.slots import ReportsBusy
from proxy.errors import ProxyError
from proxy.settings import ReportConfig
from tests.support import report_jobs
from tests.support.databases import sqlite_url
from tests.support.waiting import eventually


def runner_of(tmp_path: Path, **config: float) -> ReportRunner:
    worker = WorkerConfig(sqlite_url(tmp_path / "ledger"), 30.0, prices={}, upstreams={})
    return ReportRunner(ReportConfig(**config), worker, kill_grace_seconds=0.2)


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[ReportRunner]:
    runner = runner_of(tmp_path)
    yield runner
    await runner.stop()


async def test_a_report_runs_in_a_process_of_its_own(runner: ReportRunner) -> None:
    reporter = int(await runner.run(None, report_jobs.process_id))
    assert reporter != os.getpid()
    assert int(await runner.run(None, report_jobs.process_id)) == reporter


async def test_a_reports_refusal_reaches_the_caller_with_its_status_code_and_param(
    runner: ReportRunner,
) -> None:
    with pytest.raises(ProxyError) as refusal:
        await runner.run(None, report_jobs.refuse, "no such grouping")
    error = refusal.value
    assert (error.status, error.code, error.param) == (400, "invalid_parameter", "group_by")
    assert error.message == "no such grouping"


async def test_a_failing_report_is_a_500(runner: ReportRunner) -> None:
    with pytest.raises(ProxyError) as failure:
        await runner.run(None, report_jobs.fail)
    assert (failure.value.status, failure.value.error_type) == (500, "server_error")


async def test_cancelling_a_report_stops_it_in_the_reports_process(
    runner: ReportRunner, tmp_path: Path
) -> None:
    report = asyncio.create_task(runner.run(None, report_jobs.wait_for_cancel, str(tmp_path)))
    await eventually((tmp_path / "started").exists)
    report.cancel()
    await eventually((tmp_path / "cancelled").exists)


async def test_a_report_past_its_deadline_is_a_504_and_is_stopped(tmp_path: Path) -> None:
    runner = runner_of(tmp_path, timeout_seconds=0.5)
    try:
        with pytest.raises(ReportTimedOut) as timeout:
            await runner.run(None, report_jobs.wait_for_cancel, str(tmp_path))
        assert (timeout.value.status, timeout.value.code) == (504, "report_timeout")
        await eventually((tmp_path / "cancelled").exists)
    finally:
        await runner.stop()


async def test_a_report_still_waiting_at_its_deadline_is_a_503(tmp_path: Path) -> None:
    runner = runner_of(tmp_path, timeout_seconds=0.5, max_running=1)
    try:
        # Its place stays taken past its own deadline, until its process is killed.
        holding = runner.run(None, report_jobs.hold_the_loop, 3600, str(tmp_path))
        running = asyncio.create_task(holding)
        await eventually((tmp_path / "started").exists)
        with pytest.raises(ReportsBusy):
            await runner.run(None, report_jobs.process_id)
        with pytest.raises(ReportTimedOut):
            await running
    finally:
        await runner.stop()


async def test_a_report_that_ignores_its_deadline_is_ended_with_its_process(
    tmp_path: Path,
) -> None:
    runner = runner_of(tmp_path, timeout_seconds=0.5)
    try:
        reporter = int(await runner.run(None, report_jobs.process_id))
        with pytest.raises(ReportTimedOut):
            await runner.run(None, report_jobs.hold_the_loop, 3600, str(tmp_path))
        await eventually(lambda: not _alive(reporter))
        assert int(await runner.run(None, report_jobs.process_id)) != reporter
    finally:
        await runner.stop()


async def test_a_process_that_dies_fails_its_reports_with_503_and_is_replaced(
    runner: ReportRunner,
) -> None:
    first = await runner.run(None, report_jobs.process_id)
    with pytest.raises(ProxyError) as unavailable:
        await runner.run(None, report_jobs.exit_abruptly)
    assert (unavailable.value.status, unavailable.value.code) == (503, "reports_unavailable")
    assert await runner.run(None, report_jobs.process_id) != first


async def test_stopping_ends_the_reports_process(tmp_path: Path) -> None:
    runner = runner_of(tmp_path)
    reporter = int(await runner.run(None, report_jobs.process_id))
    await runner.stop()
    assert not _alive(reporter)


def _alive(process_id: int) -> bool:
    try:
        os.kill(process_id, 0)
    except ProcessLookupError:
        return False
    return True
