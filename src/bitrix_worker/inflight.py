"""The batches a worker process has in flight: a slot per concurrent batch, the stream ids it holds (kept
fresh by the heartbeat, never taken over by its own reclaimer), the tasks, and a clean drain on shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import StoreError
from .values import Entry


class InFlight:
    def __init__(self, concurrency: int, handle: Callable[[list[Entry]], Awaitable[None]], log: Any) -> None:
        self.ids: set[str] = set()
        self.orphans: list[list[Entry]] = []  # batches a store failure stopped before sending
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._handle = handle
        self._log = log

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def take_slot(self) -> None:
        await self._slots.acquire()

    def give_slot(self) -> None:
        self._slots.release()

    def spawn(self, entries: list[Entry]) -> None:
        """Run a batch in a slot already taken; the slot is given back when the batch ends."""
        self.ids.update(e.id for e in entries)
        task = asyncio.create_task(self._run(entries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, entries: list[Entry]) -> None:
        try:
            await self._handle(entries)
        finally:
            if not any(entries is o for o in self.orphans):
                self.ids.difference_update(e.id for e in entries)
            self._slots.release()

    async def rescue(self, ping: Callable[[], Awaitable[None]], stopping: asyncio.Event) -> None:
        """Run again, as soon as the store answers, the batches a store failure stopped before sending."""
        if not self.orphans:
            return
        try:
            await ping()
        except StoreError:
            return
        while self.orphans and not stopping.is_set():
            await self.take_slot()
            self.spawn(self.orphans.pop(0))

    async def drain(self, grace_s: float) -> None:
        """Let the batches in flight finish within ``grace_s``; the rest stay pending in the stream."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            self._log.warning("shutdown grace passed; unfinished batches stay pending", batches=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)
