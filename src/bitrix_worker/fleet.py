"""A multi-portal worker process: one delivery loop (a ``Worker``) per portal it serves, all sharing one Redis
connection pool and one mapping-store engine.

Each portal has its own stream, dead-letter stream, mapping table, limiter, pauses, breaker and schema cache
(``portal_layout``), so a slow, rate-limited, broken or flooded portal only ever waits on its own keys; the
loops share nothing that one portal can fill (each has its own batch slots and HTTP pool). Processes divide
the portals by rendezvous hashing over the live processes of this fleet, recomputed at every heartbeat: a
portal that moves away is drained (its loop stops claiming and finishes what it holds), and entries a dead
process held are reclaimed by the new owner's loop like any dead consumer's.

Placement is load-aware: each loop tells whether its portal is busy (claims coming back full for a while,
``portal_layout.Backlog``); at each heartbeat a process marks its busy portals on the fleet's board
(``BusyBoard``) and reads everyone's, and all processes place busy portals apart from the quiet ones
(``portal_layout.place``) while there are processes enough.

A stream of a portal the registry does not know (a producer named a wrong id) is served by a loop that
dead-letters every entry with the reason, so nothing waits forever unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from .bitrix.client import BitrixClient
from .config import Settings
from .defaults import LIVE_HEARTBEATS
from .errors import StoreError
from .events import WorkerEvents
from .intake import Poison
from .mapping import DEFAULT_TABLE, MappingStore
from .pacing import PROMOTE_INTERVAL_S, SCHEDULE_POLL_S, Stopping, quiet_block_ms
from .portal_layout import Backlog, assigned, portal_dead_stream, portal_stream, portal_table
from .portals.clients import client_options, open_default_client, open_portal_client
from .portals.model import PortalRecord
from .portals.registry import PortalRegistry
from .redaction import WebhookUrl
from .redis.connection import RedisClient
from .redis.producing import portal_ids
from .redis.workers import BusyBoard, WorkerRegistry
from .values import Entry

UNKNOWN_WEBHOOK = "https://unknown-portal.invalid/rest/1/none/"
"""The client of a loop that only dead-letters (an unknown portal's stream): it never sends a request."""


def portal_settings(settings: Settings, portal: str, record: PortalRecord | None) -> Settings:
    """The settings of one portal's loop: its stream and dead-letter stream, its registry id, its plan."""
    default = settings.default_portal
    update: dict[str, Any] = {
        "stream": portal_stream(settings.stream, portal, default),
        "dead_stream": portal_dead_stream(settings.stream, settings.dead_stream, portal, default),
    }
    if portal != default:
        update["portal"] = portal
    if record is not None:
        update |= {"rate_per_s": record.plan.rate_per_s, "rate_burst": record.plan.burst}
    return settings.model_copy(update=update)


@dataclass
class _Served:
    worker: Any  # Worker (imported late: worker.py imports nothing from here, but keep the graph simple)
    task: asyncio.Task[Any]
    unknown: bool  # served as a portal the registry does not know (everything dead-lettered)


@dataclass
class PortalFleet:
    """``wanted``: the registry ids to serve (None: all of them); ``default``: also serve the default portal
    (``BITRIX_WORKER_PORTAL`` or the webhook) on the configured stream."""

    settings: Settings
    redis: RedisClient
    store: MappingStore
    registry: PortalRegistry
    events: WorkerEvents | None = None
    wanted: frozenset[str] | None = None
    served: dict[str, _Served] = field(default_factory=dict)
    draining: set[asyncio.Task[Any]] = field(default_factory=set)  # loops told to stop, still finishing
    busy: set[str] = field(default_factory=set)  # the fleet's busy portals, as last read from the board
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        # processes divide the portals of one list among themselves: another list is another fleet
        key = self.settings.keys.fleet
        if self.wanted is not None:
            key += ":" + hashlib.blake2b(",".join(sorted(self.wanted)).encode(), digest_size=6).hexdigest()
        self.members = WorkerRegistry(self.redis, key)
        ttl_ms = int(LIVE_HEARTBEATS * self.settings.heartbeat_interval_s * 1000)
        self.board = BusyBoard(self.redis, key + ":busy", ttl_ms)
        self.log = structlog.get_logger("bitrix_worker.fleet").bind(consumer=self.settings.consumer)

    @property
    def default(self) -> str | None:
        return self.settings.default_portal

    def stop(self) -> None:
        self._stopping.set()

    async def portals(self) -> tuple[dict[str, PortalRecord], set[str]]:
        """Registry portals to serve (by id) and ids with a stream but no registry row (to refuse)."""
        registered = {r.portal_id: r for r in await self.registry.records()}
        noted = await portal_ids(self.redis, self.settings.keys.portals)
        unknown = {p for p in noted if p not in registered and p != self.default}
        if self.wanted is None:
            return registered, unknown
        # a deployment serving a list refuses only unknown ids on its list: the others may be another's
        records = {k: v for k, v in registered.items() if k in self.wanted}
        return records, unknown & self.wanted

    async def run(self, *, until_idle: bool = False) -> None:
        """Serve this process's share until stopped; ``until_idle``: serve every portal once, until empty."""
        interval = self.settings.heartbeat_interval_s
        try:
            while not self._stopping.is_set():
                try:
                    await self._rebalance(everything=until_idle)
                except StoreError as exc:
                    self.log.warning("cannot rebalance portals; keeping the current share", error=str(exc))
                if until_idle:
                    await asyncio.gather(*(s.task for s in self.served.values()), return_exceptions=True)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=interval)
        finally:
            for served in self.served.values():
                served.worker.stop()
            tasks = [*(s.task for s in self.served.values()), *self.draining]
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(StoreError):
                await self.members.leave(self.settings.consumer)

    async def _rebalance(self, *, everything: bool) -> None:
        me = self.settings.consumer
        now = int(time.time() * 1000)
        await self.members.beat(me, now)
        window = LIVE_HEARTBEATS * self.settings.heartbeat_interval_s * 1000
        live = [w for w, seen in (await self.members.last_seen()).items() if now - seen < window]
        records, unknown = await self.portals()
        every = sorted({*records, *unknown, *([self.default] if self.default else [])})
        busy = set() if everything else await self._exchange_busy(now)
        mine = set(every if everything else assigned(every, live, me, busy))
        for pid, served in list(self.served.items()):
            if served.task.done() or served.unknown != (pid in unknown):  # failed, or added/removed
                self._drain(pid)
        for pid in sorted(set(self.served) - mine):
            self.log.info("portal moves to another process; draining", portal=pid)
            self._drain(pid)
        for pid in sorted(mine - set(self.served)):
            ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._serve(pid, records.get(pid), pid in unknown, ready, everything))
            worker = await ready
            if worker is not None:
                self.served[pid] = _Served(worker, task, pid in unknown)
                if pid in busy and isinstance(getattr(worker, "backlog", None), Backlog):
                    worker.backlog.seed(time.monotonic())  # busy where it was: it stays busy here

    async def _exchange_busy(self, now_ms: int) -> set[str]:
        """Mark this process's busy portals on the board, unmark those that turned quiet, read the fleet's."""
        at = time.monotonic()
        marks: dict[bool, list[str]] = {True: [], False: []}
        for pid, served in sorted(self.served.items()):
            backlog = getattr(served.worker, "backlog", None)
            if isinstance(backlog, Backlog):
                busy = backlog.is_busy(at)
                if busy or pid in self.busy:  # only a change of state is written: O(busy portals)
                    marks[busy].append(pid)
        busy_now = await self.board.exchange(marks[True], marks[False], now_ms)
        if busy_now != self.busy:
            self.log.info("busy portals", busy=sorted(busy_now), marked_here=marks[True])
        self.busy = busy_now
        return busy_now

    def _drain(self, pid: str) -> None:
        """Stop the portal's loop: it claims nothing more and finishes its batches in flight, then ends."""
        served = self.served.pop(pid)
        served.worker.stop()
        self.draining.add(served.task)
        served.task.add_done_callback(self.draining.discard)

    async def _serve(
        self, pid: str, record: PortalRecord | None, unknown: bool, ready: asyncio.Future[Any], idle: bool
    ) -> None:
        """One portal's loop, from opening its client to closing it; ``ready`` gets the Worker (or None)."""
        from .worker import Worker

        settings = portal_settings(self.settings, pid, record)
        events = self.events.for_portal(pid) if self.events is not None else None  # labelled metrics
        holder: list[Any] = []
        options = client_options(settings)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if unknown:
                    client = BitrixClient(WebhookUrl.parse(UNKNOWN_WEBHOOK), **options)
                    stack.push_async_callback(client.aclose)
                    cls: type[Any] = _refusing(Worker, f"portal {pid!r} is not in the portal registry")
                elif record is None:  # the default portal: the webhook, or BITRIX_WORKER_PORTAL
                    client = await stack.enter_async_context(
                        open_default_client(
                            settings, self.redis, on_broken=_pauser(holder), events=events, **options
                        )
                    )
                    cls = _paced(Worker)
                else:
                    record = await self.registry.get(pid)  # with its secrets (records() has none)
                    opened = await stack.enter_async_context(
                        open_portal_client(
                            record,
                            registry=self.registry,
                            redis=self.redis,
                            on_broken=_pauser(holder),
                            events=events,
                            **options,
                        )
                    )
                    client, cls = opened.client, _paced(Worker)
                table = portal_table(DEFAULT_TABLE, pid, self.default)
                store = self.store if table == DEFAULT_TABLE else await self.store.sibling(table)
                worker = cls(settings, redis=self.redis, client=client, store=store, events=events)
                holder.append(worker)
                if record is not None and record.state == "auth_broken":
                    await worker.portal.gate.pause(f"auth_broken: {record.state_reason}")
                ready.set_result(worker)
                await worker.run(until_idle=idle)
        except Exception:
            self.log.exception("portal loop failed", portal=pid)
        finally:
            if not ready.done():
                ready.set_result(None)


def _pauser(holder: list[Any]) -> Any:
    async def pause(reason: str) -> None:
        if holder:
            await holder[0].portal.gate.pause(reason)

    return pause


def _paced(base: type[Any]) -> type[Any]:
    """A ``Worker`` that keeps time cheaply (``pacing``): sleeps without tasks, its retry schedule polled
    once a second while nothing falls due, long blocking reads while quiet, no second claim after a short
    one. It also keeps its portal's ``backlog`` (busy or quiet, for placement) from what its claims bring
    back."""

    class Paced(base):  # type: ignore[misc]
        def __init__(self, settings: Settings, **kwargs: Any) -> None:
            super().__init__(settings, **kwargs)
            self._stopping = Stopping()
            self.backlog = Backlog(settings.portal_busy_after_s, settings.portal_quiet_after_s)
            self._until_idle = False
            self._drained_at: str | None = None  # the last claim came back short: the stream's last id
            claim = self.queue.claim

            async def claim_noting(count: int) -> tuple[list[Entry], str]:
                entries, last = await claim(count)
                self._drained_at = last if 0 < len(entries) < count else None
                return entries, last

            self.queue.claim = claim_noting

        async def run(self, *, until_idle: bool = False) -> Any:
            self._until_idle = until_idle
            return await super().run(until_idle=until_idle)

        async def _step(self, until_idle: bool) -> bool:
            drained, self._drained_at = self._drained_at, None
            if drained is not None and not until_idle and not self.gathering.held:
                await self._wait_for_work(drained)  # at once if anything was added since the claim
                return True
            return bool(await super()._step(until_idle))

        async def _handle(self, entries: list[Entry]) -> None:
            self.backlog.claimed(len(entries) >= self.settings.batch_size, time.monotonic())
            await super()._handle(entries)

        async def _wait_for_work(self, last: str, within_s: float | None = None) -> None:
            self.backlog.claimed(False, time.monotonic())  # a claim came back empty or short: no backlog
            block_ms = self.settings.block_ms
            if not self._until_idle:
                block_ms = quiet_block_ms(block_ms, within_s)
            elif within_s is not None:
                block_ms = max(1, int(within_s * 1000))
            await self._stopping.until_done(asyncio.ensure_future(self.queue.wait_for_new(last, block_ms)))

        async def _sleep(self, seconds: float) -> None:
            await self._stopping.sleep(seconds)

        async def _every(self, interval_s: float, duty: Any) -> None:
            await super()._every(SCHEDULE_POLL_S if duty == self._promote else interval_s, duty)

        async def _promote(self) -> None:
            """Move what is due; while retries fall due, look again every 0.1 s."""
            while await self._promote_due() and not self._stopping.is_set():
                await self._sleep(PROMOTE_INTERVAL_S)

        async def _promote_due(self) -> bool:
            moved: int = await self.queue.promote_due(500)
            total = moved
            while moved >= 500:
                moved = await self.queue.promote_due(500)
                total += moved
            return total > 0

    return Paced


def _refusing(base: type[Any], refusal: str) -> type[Any]:
    """A ``Worker`` whose every entry is poison with ``refusal`` (no request is ever sent)."""

    class Refusing(base):  # type: ignore[misc]
        async def _handle(self, entries: list[Entry]) -> None:
            try:
                await self._dead_letter_poison([Poison(e, e.ident, refusal) for e in entries])
            except StoreError as exc:
                self.log.error("cannot dead-letter an unknown portal's entries yet", error=str(exc))
                self._batches.orphans.append(entries)
            finally:
                self.progress.touch()

    return Refusing
