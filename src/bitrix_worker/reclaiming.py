"""Taking over the entries of dead consumers, without leaking a concurrency slot or an in-flight mark.

The worker's reclaim duty: scan for entries idle on other consumers, take them over whole consumers at a
time (``redis/lua/reclaim.lua``), split them into batches of at most ``batch_size`` keys without splitting a
key (``intake.by_key``) and spawn one batch per group as slots free up. While a group waits for its slot its
entries are in the worker's in-flight set, so the heartbeat keeps them fresh and no one reclaims them again.
"""

from __future__ import annotations

import asyncio

import structlog

from .inflight import InFlight
from .intake import by_key
from .redis.streams import OperationQueue
from .values import Entry


class Reclaimer:
    def __init__(
        self, queue: OperationQueue, batches: InFlight, *, claim_idle_ms: int, batch_size: int
    ) -> None:
        self.queue = queue
        self.batches = batches
        self.claim_idle_ms = claim_idle_ms
        self.batch_size = batch_size
        self.log = structlog.get_logger("bitrix_worker.worker")

    async def sweep(self, stopping: asyncio.Event) -> None:
        """One pass over the pending list; each page's entries are spawned before the next page is read."""
        start = "0-0"
        while not stopping.is_set():
            await self.batches.take_slot()
            try:
                entries, start = await self.queue.reclaim(self.claim_idle_ms, self.batch_size, start)
            except BaseException:
                self.batches.give_slot()
                raise
            # An entry of this very process whose batch is slow (not dead) is not taken over again.
            entries = [e for e in entries if e.id not in self.batches.ids]
            if not entries:
                self.batches.give_slot()
            else:
                self.log.warning("reclaimed entries of a dead consumer", n=len(entries))
                await self._spawn_all(by_key(entries, self.batch_size))
            if start == "0-0":
                return

    async def _spawn_all(self, groups: list[list[Entry]]) -> None:
        """One batch per group; the caller took the first one's slot. Whatever interrupts this (a cancel
        while waiting for a slot), the groups not yet spawned are forgotten and a slot taken for none is
        given back."""
        self.batches.ids.update(e.id for group in groups for e in group)  # kept fresh while they wait
        spawned, have_slot = 0, True
        try:
            for group in groups:
                if not have_slot:
                    await self.batches.take_slot()
                    have_slot = True
                self.batches.spawn(group)  # its batch gives the slot back and forgets its ids when it ends
                have_slot = False
                spawned += 1
        finally:
            if have_slot:
                self.batches.give_slot()
            for group in groups[spawned:]:
                self.batches.ids.difference_update(e.id for e in group)
