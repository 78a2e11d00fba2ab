"""The worker process: reads the stream, builds units, delivers them in batches, and keeps time.

Orchestration only. Decisions live in ``plan``/``policy``/``outcomes``; Redis state changes in the Lua
scripts; HTTP in ``bitrix.client``. Background tasks: promote due retries, reclaim entries of dead consumers,
keep in-flight entries fresh, probe the portal while its breaker is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis

from .bitrix.client import BitrixClient
from .config import Settings
from .delivery import Delivery
from .errors import BitrixError, StoreError
from .events import EventFanout, WorkerEvents
from .intake import (
    Poison,
    build_units,
    by_key,
    poison_error,
    poison_items,
    poison_outcome,
    poison_settlement,
)
from .leases import Leases
from .limits import Breaker, Limiter, MethodPauses
from .mapping import MappingStore
from .redis.streams import Entry, OperationQueue
from .taxonomy import ErrorClass
from .units import now_ms

PROMOTE_INTERVAL_S = 0.1
CLAIM_AHEAD_S = 1.0  # claim when the limiter will let a request out within this long
STORE_RETRY_S = 1.0


@dataclass
class RunSummary:
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())


class _Tally(WorkerEvents):
    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary

    def outcome(self, outcome: str, reason: str, entity: str, error_class: ErrorClass | None) -> None:
        self.summary.outcomes[outcome] += 1


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        redis: Redis,
        client: BitrixClient,
        store: MappingStore,
        events: WorkerEvents | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.client = client
        self.store = store
        self.summary = RunSummary()
        self.events = EventFanout(_Tally(self.summary), *(e for e in [events] if e is not None))
        keys = settings.keys
        portal = settings.webhook.portal
        self.queue = OperationQueue(
            redis,
            keys,
            group=settings.group,
            consumer=settings.consumer,
            outcomes_maxlen=settings.outcomes_maxlen,
            segment_limit=settings.batch_size,
        )
        self.limiter = Limiter(
            redis,
            keys.limiter(portal),
            rate_per_s=settings.rate_per_s,
            burst=settings.rate_burst,
            safety=settings.rate_fraction,
        )
        self.breaker = Breaker(
            redis,
            keys.breaker(portal),
            cooldown_s=settings.breaker_cooldown_s,
            max_cooldown_s=settings.breaker_max_cooldown_s,
        )
        self.pauses = MethodPauses(
            redis,
            keys.method_pause(portal),
            budget_s=settings.operating_budget_s,
            safety=settings.operating_safety,
        )
        # A dead worker's create may still be running on the portal for up to the read timeout: its lease
        # must outlive that, or a successor's lookup could miss an entity that is about to be committed.
        longest_s = max(settings.read_timeout_s, settings.portal_request_timeout_s) + 5
        lease_ms = max(settings.claim_idle_ms, int(longest_s * 1000))
        self.leases = Leases(redis, keys, ttl_ms=lease_ms)
        self.delivery = Delivery(
            settings,
            client=client,
            queue=self.queue,
            store=store,
            limiter=self.limiter,
            pauses=self.pauses,
            breaker=self.breaker,
            leases=self.leases,
            events=self.events,
            rng=rng,
        )
        self.log = structlog.get_logger("bitrix_worker.worker").bind(consumer=settings.consumer)
        self._stopping = asyncio.Event()
        self._inflight: set[str] = set()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, *, events: WorkerEvents | None = None) -> AsyncIterator[Worker]:
        """Connect to Redis, the mapping store and Bitrix24; close them all on exit."""
        redis = Redis.from_url(
            settings.redis_url,
            health_check_interval=30,
            socket_keepalive=True,
            client_name=f"bitrix-worker:{settings.consumer}",  # visible in CLIENT LIST
        )
        try:
            await redis.ping()
        except Exception as exc:
            await redis.aclose()
            raise StoreError(f"cannot connect to Redis at REDIS_URL: {exc}") from exc
        store = await MappingStore.connect(settings.database_url)
        client = BitrixClient(
            settings.webhook,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            max_connections=settings.concurrency * 2 + 4,
        )
        try:
            yield cls(settings, redis=redis, client=client, store=store, events=events)
        finally:
            await client.aclose()
            await store.close()
            await redis.aclose()

    def stop(self) -> None:
        """Stop reading; in-flight batches finish within the shutdown grace, the rest stays pending."""
        self._stopping.set()

    # ---- main loop --------------------------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> RunSummary:
        await self.queue.ensure_group()
        background = [
            asyncio.create_task(self._every(PROMOTE_INTERVAL_S, self._promote)),
            asyncio.create_task(self._every(max(0.05, self.settings.claim_idle_ms / 4000), self._reclaim)),
            asyncio.create_task(self._every(max(0.05, self.settings.claim_idle_ms / 3000), self._heartbeat)),
        ]
        self.log.info(
            "worker started",
            stream=self.settings.stream,
            group=self.settings.group,
            portal=self.settings.webhook.portal,
            concurrency=self.settings.concurrency,
        )
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
        if await self._breaker_holds() or await self._limiter_backlogged():
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
            self._spawn(entries)
            return True
        self._slots.release()
        if until_idle and not self._tasks and await self.queue.is_idle():
            return False
        await self._wait_for_work(last)
        return True

    async def _limiter_backlogged(self) -> bool:
        """Claim no further ahead than the shared limiter can send.

        Entries claimed while the portal's bucket is booked for seconds ahead would only wait in this
        process's memory: if it dies, they are redelivered (and counted as deliveries) for nothing. Claiming
        just in time keeps the pending list honest and bounds what a crash hands to the reclaimer.
        """
        wait = (await self.limiter.state()).next_free_s
        if wait <= CLAIM_AHEAD_S:
            return False
        await self._sleep(min(wait - CLAIM_AHEAD_S, 1.0))
        return True

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
            units, poison = build_units(entries, max_deliveries=self.settings.max_deliveries)
            await self._dead_letter_poison(poison)
            if units:
                await self.delivery.process(units)
        except (StoreError, BitrixError) as exc:
            self.log.error("batch failed; its entries stay pending and will be reclaimed", error=str(exc))
        except Exception:
            self.log.exception("unexpected error in a batch; its entries stay pending and will be reclaimed")
        finally:
            self._inflight.difference_update(ids)
            self._slots.release()

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

    async def _dead_letter_poison(self, poison: list[Poison]) -> None:
        """Dead-letter entries that can never be processed, one dead-letter entry per operation in them."""
        settlements = []
        for p in poison:
            self.log.error("dead-lettered", reason=p.reason, error_class="poison", stream_id=p.entry.id)
            at = now_ms()
            for _ in poison_items(p.entry):
                self.events.outcome("dead_lettered", "poison", "", ErrorClass.POISON)
            if p.ident:
                settlements.append(poison_settlement(p, at))
            else:
                await self.queue.dead_letter_raw(
                    p.entry, poison_error(p.reason, p.entry.id, [], at), poison_outcome(p.entry.id, "", at)
                )
        await self.queue.settle(settlements)

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
        if (await self.breaker.state()).open:
            return
        start = "0-0"
        while not self._stopping.is_set():
            await self._slots.acquire()
            try:
                entries, start = await self.queue.reclaim(
                    self.settings.claim_idle_ms, self.settings.batch_size, start
                )
            except BaseException:
                self._slots.release()
                raise
            # An entry of this very process whose batch is slow (not dead) is not taken over again.
            entries = [e for e in entries if e.id not in self._inflight]
            if not entries:
                self._slots.release()
            else:
                self.log.warning("reclaimed entries of a dead consumer", n=len(entries))
                self._inflight.update(e.id for e in entries)  # kept fresh while batches wait for a slot
                groups = by_key(entries, self.settings.batch_size)
                self._spawn(groups[0])
                for group in groups[1:]:
                    await self._slots.acquire()
                    self._spawn(group)
            if start == "0-0":
                return

    async def _heartbeat(self) -> None:
        await self.queue.touch(sorted(self._inflight))
        await self.leases.renew()
        await self.redis.hset(self.settings.keys.workers, self.settings.consumer, now_ms())

    async def _breaker_holds(self) -> bool:
        """While the portal's breaker is open nobody consumes; after the cool-down one worker probes."""
        state = await self.breaker.state()
        if not state.open:
            return False
        now = time.time()
        owner_grace = self.settings.read_timeout_s + self.settings.claim_idle_ms / 1000
        waiting_for_owner = bool(state.probe_owner) and now < state.until + owner_grace
        if now < state.until or waiting_for_owner or not await self.breaker.acquire_probe(10.0):
            await self._sleep(min(1.0, max(0.05, state.until - now)))
            return True
        await self._probe_portal()
        return True

    async def _probe_portal(self) -> None:
        """A read-only call that spends no operation: does the webhook work again?"""
        await self.limiter.acquire()
        try:
            await self.client.fields("deal")
        except BitrixError as exc:
            c = exc.classification
            if c.error_class in (ErrorClass.AUTH, ErrorClass.BLOCKED, ErrorClass.NETWORK):
                _, state = await self.breaker.trip(
                    f"probe failed: {c.error_class.value} {c.bitrix_code or ''}".strip()
                )
                await self.breaker.release_probe()
                self.log.warning(
                    "portal probe failed; breaker stays open", until_s=round(state.until - time.time())
                )
                return
        await self.breaker.close()
        self.events.breaker(False, "probe succeeded")
        self.log.info("circuit breaker closed: portal probe succeeded")
