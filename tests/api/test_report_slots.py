"""Report slots: a few reports run at once, a few more wait in turn, a team holds at most its
share, and past those bounds a caller is refused at once."""

from __future__ import annotations

import asyncio

import pytest

from proxy.api.report_runner.slots import ReportsBusy, ReportSlots, TooManyReports


async def test_reports_past_the_running_ones_wait_in_turn() -> None:
    slots = ReportSlots(running=1, waiting=2, per_team=5)
    first = await slots.acquire("a")
    second = asyncio.create_task(slots.acquire("b"))
    third = asyncio.create_task(slots.acquire("c"))
    await asyncio.sleep(0)
    assert not second.done() and not third.done()

    first.release()
    (await asyncio.wait_for(second, 5)).release()
    await asyncio.wait_for(third, 5)


async def test_past_the_running_and_waiting_ones_a_report_is_refused_at_once() -> None:
    slots = ReportSlots(running=1, waiting=1, per_team=5)
    await slots.acquire("a")
    waiting = asyncio.create_task(slots.acquire("b"))
    await asyncio.sleep(0)

    with pytest.raises(ReportsBusy) as busy:
        await slots.acquire("c")
    assert (busy.value.status, busy.value.code) == (503, "reports_busy")
    assert (b"retry-after", b"2") in busy.value.headers()
    waiting.cancel()


async def test_a_team_past_its_share_is_refused_while_other_teams_get_places() -> None:
    slots = ReportSlots(running=4, waiting=4, per_team=2)
    await slots.acquire("a")
    await slots.acquire("a")

    with pytest.raises(TooManyReports) as refused:
        await slots.acquire("a")
    assert (refused.value.status, refused.value.code) == (429, "too_many_reports")
    assert (b"retry-after", b"2") in refused.value.headers()
    await slots.acquire("b")


async def test_a_waiting_report_that_is_cancelled_gives_up_its_place_in_the_queue() -> None:
    slots = ReportSlots(running=1, waiting=1, per_team=1)
    running = await slots.acquire("a")
    waiting = asyncio.create_task(slots.acquire("b"))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)

    queued = asyncio.create_task(slots.acquire("b"))  # team b's share and the queue are free
    await asyncio.sleep(0)
    running.release()
    await queued


async def test_releasing_a_slot_twice_frees_one_place() -> None:
    slots = ReportSlots(running=1, waiting=0, per_team=5)
    slot = await slots.acquire("a")
    slot.release()
    slot.release()
    await slots.acquire("a")

    with pytest.raises(ReportsBusy):
        await slots.acquire("a")
