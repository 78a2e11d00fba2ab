"""The worker process: reads the stream, builds units, delivers them in batches, and keeps time.

Orchestration only. Decisions live in ``plan``/``policy``/``judge``/``outcomes``; the portal's pause and
probes in ``gate``; Redis state changes in ``redis/``; HTTP in ``bitrix.client``. Background duties: promote
due retries, reclaim entries of dead consumers, keep in-flight entries fresh (the heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import structlog

from .bitrix.client import BitrixClient
from .bitrix.marking import before_first_request, marking_transport
from .config import Settings
from .delivery import Delivery
from .errors import BitrixError, StoreError
from .events import EventFanout, RunSummary, Tally, WorkerEvents
from .intake import build_units
from .mapping import MappingStore
from .outcomes import Result
from .portal import Portal
from .reclaiming import Reclaimer
from .redis.connection import RedisClient, client_for, ping_or_fail
from .redis.gauges import QueueReader
from .redis.leases import Leases, lease_ttl_ms
from .redis.streams import OperationQueue
from .redis.workers import WorkerRegistry
from .rescue import look_up_crash_looping_creates, merge
from .stall import Progress, stuck_reason
from .units import WorkUnit
from .values import Clock, Entry, ms

PROMOTE_INTERVAL_S = 0.1
CLAIM_AHEAD_S = 1.0  # claim when the limiter will let a request out within this long
STORE_RETRY_S = 1.0


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        redis: RedisClient,
        client: BitrixClient,
        store: MappingStore,
        events: WorkerEvents | None = None,
        rng: random.Random | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.summary = RunSummary()
        self.progress = Progress()
        self.events = EventFanout(Tally(self.summary), self.progress, *(e for e in [events] if e is not None))
        keys = settings.keys
        self.queue = OperationQueue(
            redis,
            keys,
            group=settings.group,
            consumer=settings.consumer,
            outcomes_maxlen=settings.outcomes_maxlen,
            segment_limit=settings.batch_size,
        )
        self.reader = QueueReader(redis, keys, settings.group)
        self.registry = WorkerRegistry(redis, keys.workers)
        self.portal = Portal.from_settings(redis, settings, client, self.events)
        self.leases = Leases(redis, keys, ttl_ms=lease_ttl_ms(settings))
        self.delivery = Delivery(
            settings,
            client=client,
            queue=self.queue,
            store=store,
            limiter=self.portal.limiter,
            pauses=self.portal.pauses,
            leases=self.leases,
            events=self.events,
            rng=rng,
            clock=clock,
        )
        self.log = structlog.get_logger("bitrix_worker.worker").bind(
            consumer=settings.consumer, portal=self.portal.name
        )
        self._stopping = asyncio.Event()
        self._inflight: set[str] = set()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.reclaimer = Reclaimer(
            self.queue,
            slots=self._slots,
            inflight=self._inflight,
            spawn=self._spawn,
            claim_idle_ms=settings.claim_idle_ms,
            batch_size=settings.batch_size,
        )

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, *, events: WorkerEvents | None = None) -> AsyncIterator[Worker]:
        """Connect to Redis, the mapping store and Bitrix24; close them all on exit."""
        redis = client_for(settings.redis_url, name=f"bitrix-worker:{settings.consumer}")  # in CLIENT LIST
        await ping_or_fail(redis, settings.redis_url)
        store = await MappingStore.connect(settings.database_url)
        client = BitrixClient(
            settings.webhook,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            transport=marking_transport(settings.concurrency * 2 + 4),  # marks a batch sent (poison cap)
        )
        try:
            yield cls(settings, redis=redis, client=client, store=store, events=events)
        finally:
            await client.aclose()
            await store.close()
            await redis.aclose()

    def stuck(self) -> str | None:
        """Why this worker counts as stuck (it holds entries but made no progress for too long), or None."""
        return stuck_reason(len(self._inflight), self.progress.since_s(), self.settings.stall_after_s)

    def stop(self) -> None:
        """Stop reading; in-flight batches finish within the shutdown grace, the rest stays pending."""
        self._stopping.set()

    # ---- main loop --------------------------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> RunSummary:
        await self.queue.ensure_group()
        idle_s = self.settings.claim_idle_ms / 1000
        background = [
            asyncio.create_task(self._every(PROMOTE_INTERVAL_S, self._promote)),
            asyncio.create_task(self._every(max(0.05, idle_s / 4), self._reclaim)),
            asyncio.create_task(self._every(max(0.05, idle_s / 3), self._heartbeat)),
        ]
        s = self.settings
        self.log.info("worker started", stream=s.stream, group=s.group, concurrency=s.concurrency)
        try:
            while not self._stopping.is_set():
                try:
                    if not await self._step(until_idle):
                        break
                except StoreError as exc:
                    self.log.error("redis or mapping store unavailable; retrying", error=str(exc))
                    await self._sleep(STORE_RETRY_S)
        finally:
            await self._drain()
            # Tell the duties to end, not only cancel them: on Python 3.11 a cancel that lands while redis-py
            # sends a command (its asyncio.wait_for with socket_timeout) can be swallowed, and a duty that
            # missed it would loop on forever, so ``run --until-idle`` never returned.
            self._stopping.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self.log.info("worker stopped", **dict(self.summary.outcomes))
        return self.summary

    async def _step(self, until_idle: bool) -> bool:
        """One turn of the loop; False ends it (until-idle reached)."""
        wait = await self.portal.gate.holds()
        if wait is None:
            wait = await self._limiter_backlog_s()
        if wait is not None:
            await self._sleep(wait)
            return True
        await self._slots.acquire()
        if self._stopping.is_set():
            self._slots.release()
            return True
        try:
            entries, last = await self.queue.claim(self.settings.batch_size)
        except BaseException:
            self._slots.release()
            raise
        if entries:
            self.progress.touch()
            self._spawn(entries)
            return True
        self._slots.release()
        if until_idle and not self._tasks and await self.reader.is_idle():
            return False
        await self._wait_for_work(last)
        return True

    async def _limiter_backlog_s(self) -> float | None:
        """Claim no further ahead than the shared limiter can send.

        Entries claimed while the portal's bucket is booked for seconds ahead would only wait in this
        process's memory: if it dies, they are redelivered (and counted as deliveries) for nothing. Claiming
        just in time keeps the pending list honest and bounds what a crash hands to the reclaimer.
        """
        wait = (await self.portal.limiter.state()).next_free_s
        return None if wait <= CLAIM_AHEAD_S else min(wait - CLAIM_AHEAD_S, 1.0)

    async def _wait_for_work(self, last: str) -> None:
        waiter = asyncio.create_task(self.queue.wait_for_new(last, self.settings.block_ms))
        stopper = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not waiter.done():
            # Not a blocking XREADGROUP: cancelling a plain XREAD loses nothing. Drop the connection.
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError, StoreError):
            await waiter

    def _spawn(self, entries: list[Entry]) -> None:
        task = asyncio.create_task(self._handle(entries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, entries: list[Entry]) -> None:
        ids = [e.id for e in entries]
        self._inflight.update(ids)
        try:
            with before_first_request(lambda: self.queue.mark_sent(ids)):
                await self._handle_entries(entries)
        except (StoreError, BitrixError) as exc:
            self.log.error("batch failed; its entries stay pending and will be reclaimed", error=str(exc))
        except Exception:
            self.log.exception("unexpected error in a batch; its entries stay pending and will be reclaimed")
        finally:
            self._inflight.difference_update(ids)
            self._slots.release()
            self.progress.touch()

    async def _handle_entries(self, entries: list[Entry]) -> None:
        """Judge each entry alone; dead-letter the poison (a crash-looping create once looked up); deliver."""
        at = ms(self.clock)
        units, poison = build_units(entries, max_deliveries=self.settings.max_deliveries, at_ms=at)
        poison, found = await look_up_crash_looping_creates(
            poison, self.delivery.sender, originator_id=self.settings.originator_id, at_ms=at
        )
        await self.delivery.dead_letter_poison(poison)
        units = merge(units, found)
        if units:
            _, held = await self._deliver(units, may_hold=True)
            if held is not None:
                await self.portal.gate.probe(held.unit, self._probe_with)

    async def _deliver(
        self, units: Sequence[WorkUnit], *, may_hold: bool
    ) -> tuple[list[Result], Result | None]:
        """Deliver, let the gate look at the results (it may hold one back as its probe), then settle."""
        delivered = await self.delivery.deliver(units)
        try:
            held = await self.portal.gate.observe(delivered.results, may_hold=may_hold)
        except BaseException:
            await self.delivery.abandon(delivered)
            raise
        await self.delivery.finish(delivered, [r for r in delivered.results if r is not held])
        return delivered.results, held

    async def _probe_with(self, unit: WorkUnit) -> list[Result]:
        results, _ = await self._deliver([unit], may_hold=False)
        return results

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.settings.shutdown_grace_s)
        for task in pending:
            task.cancel()
        if pending:
            self.log.warning("shutdown grace passed; unfinished batches stay pending", batches=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # ---- background duties ------------------------------------------------------------------------------

    async def _every(self, interval_s: float, duty: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping.is_set():
            try:
                await duty()
            except StoreError as exc:
                self.log.warning("background duty failed", duty=duty.__name__, error=str(exc))
            except Exception:
                self.log.exception("background duty crashed", duty=duty.__name__)
            await self._sleep(interval_s)

    async def _promote(self) -> None:
        while await self.queue.promote_due(500) >= 500:
            pass

    async def _reclaim(self) -> None:
        if not await self.portal.gate.is_shut():
            await self.reclaimer.sweep(self._stopping)

    async def _heartbeat(self) -> None:
        await self.queue.touch(sorted(self._inflight))
        await self.leases.renew()
        await self.registry.beat(self.settings.consumer, ms(self.clock))
