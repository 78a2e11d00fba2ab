"""How a multi-portal process's portal loops keep time cheaply (``fleet._paced`` builds its ``Worker`` on it).

A process serving a hundred quiet portals spends most of its CPU not on their operations but on keeping
their loops alive: every loop turn, timer and wait is a few Redis round trips and a few asyncio tasks, times
the portals. Measured with py-spy on one process serving 100 portals (docs/scaling.md, "What a quiet
portal costs"): idle, the duties' sleeps were over a third of its CPU (``asyncio.wait_for`` makes a task
and a timeout per sleep, 12 sleeps a second per portal) and the loop turns (gate and limiter read, an empty
claim, a blocking read, each second) another third. So here:

* a sleep is one future and one timer, woken early by the loop's stop event (``Stopping``), not a task;
* the retry schedule is polled once a second while nothing falls due (``SCHEDULE_POLL_S``), every 0.1 s
  while retries do: one timer a second instead of ten ticks;
* a quiet loop blocks for new entries up to ``QUIET_WAIT_MS`` (10 s) instead of ``BLOCK_MS`` (1 s): a
  blocking read wakes as soon as anything is added to the stream, and everything that puts work back on it
  (a due retry, a key's turn released, a replay) adds an entry, so the turn of the loop every second only
  re-read an unchanged gate and claimed nothing;
* after a claim that came back short (the stream was drained: a lone operation), the loop waits for new
  entries before it claims again, instead of reading the gate and claiming once more to find nothing: two
  round trips fewer per lone operation.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .errors import StoreError

SCHEDULE_POLL_S = 1.0
"""How often a portal loop whose retry schedule had nothing due polls it (every ``PROMOTE_INTERVAL_S`` while
retries fall due): a due retry waits at most 1 s more; the 0.1 s poll was three quarters of an idle
portal's Redis commands (docs/scaling.md, "Many portals")."""

QUIET_WAIT_MS = 10_000
"""The longest a quiet portal loop blocks waiting for new entries (``BITRIX_WORKER_BLOCK_MS`` when longer).
Not longer: a process's loops keep no more connections for it, but a blocked read also holds off the
connection's health check (30 s)."""

PROMOTE_INTERVAL_S = 0.1
"""The poll interval while retries fall due (the single-portal worker's, ``worker.PROMOTE_INTERVAL_S``)."""


class Stopping(asyncio.Event):
    """A loop's stop event that also ends its sleeps and cancels its waits the moment it is set, whoever
    sets it, so that neither needs a task of its own watching it."""

    def __init__(self) -> None:
        super().__init__()
        self._sleepers: set[asyncio.Future[None]] = set()
        self._waits: set[asyncio.Future[Any]] = set()

    def set(self) -> None:
        super().set()
        for fut in list(self._sleepers):
            _wake(fut)
        for wait in list(self._waits):
            wait.cancel()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or until set."""
        if self.is_set():
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(max(0.0, seconds), _wake, fut)
        self._sleepers.add(fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._sleepers.discard(fut)

    async def until_done(self, wait: asyncio.Future[Any]) -> None:
        """Await ``wait`` (a blocking read), cancelled when this is set; its StoreError is the next turn's.
        A cancel of the caller itself still propagates."""
        if self.is_set():
            wait.cancel()
        self._waits.add(wait)
        try:
            await wait
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except StoreError:
            pass
        finally:
            self._waits.discard(wait)
            if not wait.done():
                wait.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreError):
                await wait


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def quiet_block_ms(block_ms: int, within_s: float | None) -> int:
    """How long a loop's blocking read may wait: until the gathering's due time when it holds entries
    (``within_s``), else the longer of ``block_ms`` and ``QUIET_WAIT_MS``."""
    if within_s is not None:
        return max(1, int(within_s * 1000))
    return max(block_ms, QUIET_WAIT_MS)
