"""A fleet loop's cheap timekeeping (``pacing``): its sleeps and waits end the moment its stop event is set,
whoever sets it, and a cancel of the loop itself is never swallowed."""

from __future__ import annotations

import asyncio
import time

import pytest

from bitrix_worker.errors import StoreError
from bitrix_worker.pacing import QUIET_WAIT_MS, Stopping, quiet_block_ms


async def test_a_sleep_lasts_its_time_or_ends_when_set() -> None:
    stopping = Stopping()
    t = time.monotonic()
    await stopping.sleep(0.05)
    assert 0.04 <= time.monotonic() - t < 1.0
    sleeper = asyncio.create_task(stopping.sleep(30))
    await asyncio.sleep(0.01)
    t = time.monotonic()
    stopping.set()
    await asyncio.wait_for(sleeper, 1)
    assert time.monotonic() - t < 0.5
    await asyncio.wait_for(stopping.sleep(30), 0.1)  # already set: returns at once


async def test_a_wait_is_cancelled_when_set_and_its_store_error_kept_for_the_next_turn() -> None:
    stopping = Stopping()
    wait = asyncio.ensure_future(asyncio.sleep(30))
    waiting = asyncio.create_task(stopping.until_done(wait))
    await asyncio.sleep(0.01)
    stopping.set()
    await asyncio.wait_for(waiting, 1)  # ends quietly
    assert wait.cancelled()

    async def fails() -> None:
        raise StoreError("redis went away")

    await Stopping().until_done(asyncio.ensure_future(fails()))  # the next turn meets it again


async def test_a_cancel_of_the_loop_itself_goes_through() -> None:
    stopping = Stopping()
    wait = asyncio.ensure_future(asyncio.sleep(30))
    waiting = asyncio.create_task(stopping.until_done(wait))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert wait.cancelled()


def test_a_quiet_wait_is_long_unless_the_gathering_is_due() -> None:
    assert quiet_block_ms(1000, None) == QUIET_WAIT_MS
    assert quiet_block_ms(QUIET_WAIT_MS + 5000, None) == QUIET_WAIT_MS + 5000
    assert quiet_block_ms(1000, 0.25) == 250
    assert quiet_block_ms(1000, 0.0) == 1
