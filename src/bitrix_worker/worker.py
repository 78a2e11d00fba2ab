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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog

from .bitrix.client import BitrixClient
from .bitrix.marking import before_first_request
from .config import Settings
from .delivery import Delivery
from .errors import BitrixError, StoreError
from .events import EventFanout, RunSummary, Tally, WorkerEvents
from .gathering import Batch, Gathering
from .inflight import InFlight
from .intake import Poison, build_units
from .mapping import MappingStore
from .outcomes import Outcome
from .portal import Portal
from .portals.clients import client_options, open_default_client
from .reclaiming import Reclaimer
from .redis.connection import RedisClient, check_cluster_layout, client_for, ping_or_fail
from .redis.gauges import QueueReader
from .redis.leases import Leases, lease_ttl_ms
from .redis.stores import StoreRegistry
from .redis.streams import OperationQueue
from .redis.workers import WorkerRegistry
from .rescue import dead_letter_poison, look_up_crash_looping_creates, merge
from .screening import Screening
from .stall import Progress, stuck_reason
from .store_check import check_store
from .values import Clock, Entry, ms

PROMOTE_INTERVAL_S = 0.1
RESCUE_INTERVAL_S = 0.5
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
        self.stores = StoreRegistry(redis, keys)
        self._store_id = ""
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
            gate=self.portal.gate,
            screening=Screening.build(redis, settings, client, self.portal, self.events),
            rng=rng,
            clock=clock,
        )
        self.log = structlog.get_logger("bitrix_worker.worker").bind(
            consumer=settings.consumer, portal=self.portal.name
        )
        self._stopping = asyncio.Event()
        self._batches = InFlight(settings.concurrency, self._handle, self.log)
        self.gathering = Gathering(settings.batch_size, settings.tail_linger_s)
        self.reclaimer = Reclaimer(
            self.queue, self._batches, claim_idle_ms=settings.claim_idle_ms, batch_size=settings.batch_size
        )

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, *, events: WorkerEvents | None = None) -> AsyncIterator[Worker]:
        """Connect to Redis, the mapping store and Bitrix24; close them all on exit."""
        check_cluster_layout(settings.redis_url, settings.keys)
        redis = client_for(settings.redis_url, name=f"bitrix-worker:{settings.consumer}")  # in CLIENT LIST
        await ping_or_fail(redis, settings.redis_url)
        store = await MappingStore.connect(settings.database_url)
        opened: list[Worker] = []  # a dead OAuth refresh token pauses the portal's gate (on_broken)
        try:
            async with open_default_client(
                settings,
                redis,
                on_broken=lambda reason: opened[0].portal.gate.pause(reason),  # noqa: PLW0108 - late-bound
                events=events,
                **client_options(settings),
            ) as client:
                opened.append(cls(settings, redis=redis, client=client, store=store, events=events))
                yield opened[0]
        finally:
            await store.close()
            await redis.aclose()

    def stuck(self) -> str | None:
        """Why this worker counts as stuck (it holds entries but made no progress for too long), or None."""
        return stuck_reason(len(self._batches.ids), self.progress.since_s(), self.settings.stall_after_s)

    def stop(self) -> None:
        """Stop reading; in-flight batches finish within the shutdown grace, the rest stays pending."""
        self._stopping.set()

    # ---- main loop --------------------------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> RunSummary:
        await self.queue.ensure_group()
        self._store_id, self.delivery.vouched = await check_store(
            self.store, self.stores, self.registry, self.settings, now_ms=ms(self.clock), log=self.log
        )
        background = [
            asyncio.create_task(self._every(PROMOTE_INTERVAL_S, self._promote)),
            asyncio.create_task(self._every(RESCUE_INTERVAL_S, self._rescue)),
            asyncio.create_task(self._every(max(0.05, self.settings.claim_idle_ms / 4000), self._reclaim)),
            asyncio.create_task(self._every(self.settings.heartbeat_interval_s, self._heartbeat)),
        ]
        self.log.info("worker started", stream=self.settings.stream, concurrency=self.settings.concurrency)
        try:
            while not self._stopping.is_set():
                try:
                    if not await self._step(until_idle):
                        break
                except StoreError as exc:
                    self.log.error("redis or mapping store unavailable; retrying", error=str(exc))
                    await self._sleep(STORE_RETRY_S)
        finally:
            if self.gathering.held:  # claimed for a batch that was gathering: send it like one in flight
                await self._batches.take_slot()
                self._batches.spawn(self.gathering.take())
            await self._batches.drain(self.settings.shutdown_grace_s)
            # Tell the duties to end, not only cancel them: on 3.11 a cancel landing while redis-py sends a
            # command can be swallowed, and ``run --until-idle`` never returned.
            self._stopping.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(StoreError):  # a dead Redis: the heartbeat ages out instead
                await self._heartbeat()  # the store's fence is recorded up to the last write
                await self.registry.leave(self.settings.consumer)
                await self.stores.leave(self.settings.consumer)
            self.log.info("worker stopped", **dict(self.summary.outcomes))
        return self.summary

    async def _step(self, until_idle: bool) -> bool:
        """One turn of the loop; False ends it (until-idle reached)."""
        wait = await self.portal.claim_wait(CLAIM_AHEAD_S)  # the gate's hold, else the limiter's pace
        if wait is not None:
            await self._sleep(wait)
            return True
        await self._batches.take_slot()
        if self._stopping.is_set():
            self._batches.give_slot()
            return True
        try:
            if self.gathering.fell_due(self.clock()):  # a retry it scheduled is due: promote it, then claim
                await self.queue.promote_due(500)  # (not after the timer's next tick: ``gathering``)
            entries, last = await self.queue.claim(self.gathering.room())
            if entries:
                self.progress.touch()
            batch = entries if self.gathering.full(entries) else self._gather(entries)
        except BaseException:
            self._batches.give_slot()
            raise
        if batch:
            self._batches.spawn(batch)
            return True
        self._batches.give_slot()
        if not self.gathering.held and until_idle and not self._batches.busy and await self.reader.is_idle():
            return False
        await self._wait_for_work(last, self.gathering.wait_s(self.clock()) if self.gathering.held else None)
        return True

    def _gather(self, entries: list[Entry]) -> list[Entry]:
        """A short claim is held while more work is expected at once (``gathering``); what goes now."""
        g, now = self.gathering, self.clock()
        g.add(entries, now)
        self._batches.ids.update(e.id for e in entries)  # the heartbeat keeps held entries fresh
        expecting = g.linger_s > 0 and (self._batches.busy or g.retry_due_within(now))
        return g.take() if g.ready(now, expecting=expecting) else []

    async def _wait_for_work(self, last: str, within_s: float | None = None) -> None:
        block_ms = self.settings.block_ms if within_s is None else max(1, int(within_s * 1000))
        waiter = asyncio.create_task(self.queue.wait_for_new(last, block_ms))
        stopper = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not waiter.done():  # not a blocking XREADGROUP: cancelling a plain XREAD loses nothing
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError, StoreError):
            await waiter

    async def _handle(self, entries: list[Entry]) -> None:
        """Judge each entry alone; dead-letter the poison (a crash-looping create once looked up); deliver.
        Right before the batch's first request leaves, its entries are marked sent (the poison cap)."""
        ids = [e.id for e in entries]
        batch = Batch(self.gathering, entries, ids, self.clock())  # units beyond a request's worth go back
        try:
            with before_first_request(lambda: self.queue.mark_sent(ids)):
                at = ms(self.clock)
                units, poison = build_units(
                    entries, max_deliveries=self.settings.max_deliveries, at_ms=at, portal=self.portal.name
                )
                poison, found = await look_up_crash_looping_creates(
                    poison, self.delivery.sender, originator_id=self.settings.originator_id, at_ms=at
                )
                await self._dead_letter_poison(poison)
                units = merge(units, found)
                for r in await self.delivery.run(units, batch) if units else []:
                    if r.outcome is Outcome.RETRY:  # the tail's gathering waits for these (``gathering``)
                        self.gathering.scheduled(self.clock() + r.delay_s)
        except StoreError as exc:
            # Nothing was sent (what follows a request is retried until written): keep the entries and
            # try them again here as soon as the store answers, instead of waiting to be reclaimed.
            self.log.error("store unavailable before sending; the batch waits for it", error=str(exc))
            self._batches.orphans.append(entries)
        except BitrixError as exc:
            self.log.error("batch failed; its entries stay pending and will be reclaimed", error=str(exc))
        except Exception:
            self.log.exception("unexpected error in a batch; its entries stay pending and will be reclaimed")
        finally:
            self.progress.touch()

    async def _rescue(self) -> None:
        await self._batches.rescue(self.reader.ping, self._stopping)

    async def _dead_letter_poison(self, poison: list[Poison]) -> None:
        await dead_letter_poison(poison, self.queue, self.events, self.log, self.clock)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # ---- background duties ------------------------------------------------------------------------------

    async def _every(self, interval_s: float, duty: Callable[[], Awaitable[None]]) -> None:
        failing = False  # say so once per outage, not at every tick
        while not self._stopping.is_set():
            try:
                await duty()
                if failing:
                    self.log.info("background duty works again", duty=duty.__name__)
                failing = False
            except StoreError as exc:
                if not failing:
                    self.log.warning("background duty failed", duty=duty.__name__, error=str(exc))
                failing = True
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
        await self.queue.touch(sorted(self._batches.ids))
        await self.leases.renew()
        await self.registry.beat(self.settings.consumer, ms(self.clock))
        if self._store_id and self.delivery.fence_written:
            await self.stores.raise_fence(self._store_id, self.delivery.fence_written)
