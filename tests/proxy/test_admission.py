"""The adaptive recall limit on its own: AIMD arithmetic on known outcomes."""

from __future__ import annotations

import asyncio

import pytest

from proxy.admission import RecallAdmission

DEADLINE = 0.06


def test_admits_up_to_the_limit_and_frees_a_slot_on_release() -> None:
    admission = RecallAdmission(ceiling=2)
    assert admission.try_acquire() and admission.try_acquire()
    assert not admission.try_acquire()
    admission.release(0.001, DEADLINE, now=1.0)
    assert admission.inflight == 1
    assert admission.try_acquire()


def test_a_missed_deadline_halves_the_limit_once_per_deadline() -> None:
    admission = RecallAdmission(ceiling=16)
    for _ in range(16):
        admission.try_acquire()
    admission.release(0.2, DEADLINE, now=10.0)
    admission.release(0.2, DEADLINE, now=10.01)  # queued behind the first miss: no second cut
    assert admission.limit == 8
    admission.release(0.2, DEADLINE, now=10.0 + DEADLINE)
    assert admission.limit == 4


def test_fast_recalls_grow_the_limit_to_the_ceiling_and_not_past_it() -> None:
    admission = RecallAdmission(ceiling=3)
    admission.try_acquire()
    admission.release(0.2, DEADLINE, now=1.0)
    assert admission.limit == 1
    grown = []
    for step in range(12):
        admission.try_acquire()
        admission.release(0.001, DEADLINE, now=2.0 + step)
        grown.append(admission.limit)
    assert grown[0] == 2 and grown[-1] == 3 and grown == sorted(grown)


def test_a_recall_near_its_deadline_neither_grows_nor_shrinks_the_limit() -> None:
    admission = RecallAdmission(ceiling=4)
    admission.try_acquire()
    admission.release(0.2, DEADLINE, now=1.0)
    admission.try_acquire()
    admission.release(DEADLINE * 0.9, DEADLINE, now=2.0)
    assert admission.limit == 2


def test_a_floor_above_the_ceiling_is_refused() -> None:
    with pytest.raises(ValueError, match="floor"):
        RecallAdmission(ceiling=2, floor=3)


async def test_a_waiting_request_gets_the_slot_a_finished_recall_frees() -> None:
    admission = RecallAdmission(ceiling=1)
    assert await admission.acquire(1.0)
    waiting = asyncio.ensure_future(admission.acquire(1.0))
    await asyncio.sleep(0)
    assert admission.waiting == 1 and not admission.try_acquire()  # no jumping the queue
    admission.release(0.001, DEADLINE, now=1.0)
    assert await waiting is True
    assert admission.inflight == 1 and admission.waiting == 0


async def test_waiting_ends_at_the_timeout_without_holding_a_slot() -> None:
    admission = RecallAdmission(ceiling=1)
    assert await admission.acquire(1.0)
    assert await admission.acquire(0.01) is False
    assert admission.waiting == 0 and admission.inflight == 1
    admission.release(0.001, DEADLINE, now=1.0)
    assert admission.inflight == 0 and admission.try_acquire()


async def test_waiters_are_served_first_come_first_served_and_a_cancelled_one_is_skipped() -> None:
    admission = RecallAdmission(ceiling=1)
    assert await admission.acquire(1.0)
    order: list[str] = []

    async def wait(name: str) -> None:
        if await admission.acquire(1.0):
            order.append(name)

    first = asyncio.ensure_future(wait("first"))
    gone = asyncio.ensure_future(wait("gone"))
    last = asyncio.ensure_future(wait("last"))
    await asyncio.sleep(0)
    gone.cancel()  # the client hung up while waiting
    await asyncio.sleep(0)
    admission.release(0.001, DEADLINE, now=1.0)
    await first
    admission.release(0.001, DEADLINE, now=2.0)
    await last
    assert order == ["first", "last"]
    assert admission.inflight == 1 and admission.waiting == 0


async def test_a_slot_granted_to_a_request_cancelled_at_that_moment_is_passed_on() -> None:
    admission = RecallAdmission(ceiling=1)
    assert await admission.acquire(1.0)
    doomed = asyncio.ensure_future(admission.acquire(1.0))
    heir = asyncio.ensure_future(admission.acquire(1.0))
    await asyncio.sleep(0)
    admission.release(0.001, DEADLINE, now=1.0)  # grants the slot to ``doomed``…
    doomed.cancel()  # …which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await heir is True
    assert admission.inflight == 1
