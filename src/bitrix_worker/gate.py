"""The portal gate: one room for everything that stops and restarts a whole portal's traffic.

Bitrix24 problems come in two sizes. An operation's own (a bad field, a deleted deal) is the policy's
business. A portal's (a revoked webhook, OVERLOAD_LIMIT) is the gate's: it shuts the portal for every worker
(state in Redis, ``redis/breaker.py``), holds the backlog, lets one worker probe after a cool-down, and
reopens when the probe succeeds. An operator may also pause a portal by hand; then nobody probes and only
``resume`` reopens it.

One gate per portal: the single-webhook set-up has one; a multi-portal deployment makes one per portal.

Probing: the operation whose auth failure shut the gate is held back (not settled) and sent again as the
first probe once the cool-down is over, so a webhook that is really dead costs that operation exactly its
budget; later probes are read-only calls (``crm.deal.fields``) that spend no operation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from .bitrix.client import BitrixClient
from .config import Settings
from .errors import BitrixError, BitrixWorkerError
from .events import WorkerEvents
from .outcomes import Outcome, Result
from .redis.breaker import Breaker, BreakerState
from .redis.connection import RedisClient
from .redis.limits import Limiter
from .taxonomy import ErrorClass
from .units import WorkUnit
from .values import Clock

GateState = BreakerState
PROBE_LOCK_S = 10.0  # how long the read-only probe's lock lives if its worker dies mid-probe
_FAILED_PROBE = (ErrorClass.AUTH, ErrorClass.BLOCKED, ErrorClass.NETWORK)

Attempt = Callable[[WorkUnit], Awaitable[list[Result]]]


def shuts_portal(r: Result) -> bool:
    """Auth failures (a configuration problem) and OVERLOAD_LIMIT (a manual block) are the portal's."""
    c = r.classification
    if c is None:
        return False
    return c.error_class is ErrorClass.AUTH or (
        c.error_class is ErrorClass.BLOCKED and r.outcome is Outcome.RETRY
    )


def _reason(r: Result) -> str:
    c = r.classification
    if c is None:
        return ""
    return f"{c.error_class.value}: {c.bitrix_code or c.http_status or ''} {c.description}".strip()


class PortalGate:
    def __init__(
        self,
        settings: Settings,
        breaker: Breaker,
        *,
        limiter: Limiter | None = None,
        client: BitrixClient | None = None,
        events: WorkerEvents | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._settings = settings
        self._breaker = breaker
        self._limiter = limiter
        self._client = client
        self._events = events or WorkerEvents()
        self._clock = clock
        self._log = structlog.get_logger("bitrix_worker.gate")

    @classmethod
    def from_settings(
        cls,
        redis: RedisClient,
        settings: Settings,
        *,
        limiter: Limiter | None = None,
        client: BitrixClient | None = None,
        events: WorkerEvents | None = None,
    ) -> PortalGate:
        breaker = Breaker(
            redis,
            settings.keys.breaker(settings.webhook.portal),
            cooldown_s=settings.breaker_cooldown_s,
            max_cooldown_s=settings.breaker_max_cooldown_s,
        )
        return cls(settings, breaker, limiter=limiter, client=client, events=events)

    # ---- for operators --------------------------------------------------------------------------------

    async def state(self) -> GateState:
        return await self._breaker.state()

    async def pause(self, reason: str) -> None:
        """Stop every worker consuming for this portal until ``resume``; nothing probes meanwhile."""
        await self._breaker.pause(reason)
        self._log.warning("portal paused by an operator", reason=reason)

    async def resume(self) -> None:
        """Reopen now, whatever shut the gate (a fixed webhook need not wait out its cool-down)."""
        await self._breaker.close()
        self._events.breaker(False, "resumed")
        self._log.info("portal resumed")

    # ---- for the worker loop --------------------------------------------------------------------------

    async def is_shut(self) -> bool:
        return (await self._breaker.state()).open

    async def holds(self) -> float | None:
        """None while the portal is open; else how long to wait before asking again.

        After a cool-down one worker (the one that wins the probe lock, and not before the worker holding
        a real operation as its probe had its chance) probes with a read-only call.
        """
        state = await self._breaker.state()
        if not state.open:
            return None
        if state.manual:
            return 1.0
        now = self._clock()
        owner_grace = self._settings.read_timeout_s + self._settings.claim_idle_ms / 1000
        waiting_for_owner = bool(state.probe_owner) and now < state.until + owner_grace
        if now < state.until or waiting_for_owner or not await self._breaker.acquire_probe(PROBE_LOCK_S):
            return min(1.0, max(0.05, state.until - now))
        await self._probe_read_only()
        return 0.0

    async def _probe_read_only(self) -> None:
        """A read-only call that spends no operation: does the webhook work again?"""
        if self._client is None or self._limiter is None:
            raise BitrixWorkerError("a probing gate needs the portal's client and limiter")
        await self._limiter.acquire()
        try:
            await self._client.fields("deal")
        except BitrixError as exc:
            c = exc.classification
            if c.error_class in _FAILED_PROBE:
                _, state = await self._breaker.trip(
                    f"probe failed: {c.error_class.value} {c.bitrix_code or ''}".strip()
                )
                await self._breaker.release_probe()
                self._log.warning(
                    "portal probe failed; breaker stays open", until_s=round(state.until - self._clock())
                )
                return
        await self._close("circuit breaker closed: portal probe succeeded")

    async def observe(self, results: Sequence[Result], *, may_hold: bool) -> Result | None:
        """Shut the gate if these results say the portal failed; once per outage (a batch in flight when it
        started refusing adds nothing). Returns the result to hold back as the first probe, if any."""
        shutting = [r for r in results if shuts_portal(r)]
        if not shutting:
            return None
        first = shutting[0]
        blocked = any(
            r.classification and r.classification.error_class is ErrorClass.BLOCKED for r in shutting
        )
        c = first.classification
        hold = (
            first
            if may_hold and c and c.error_class is ErrorClass.AUTH and first.outcome is Outcome.RETRY
            else None
        )
        reason = _reason(first)
        opened, _ = await self._breaker.trip(
            reason,
            cooldown_s=self._settings.blocked_cooldown_s if blocked else None,
            probe_owner=self._settings.consumer if hold else "",
        )
        if not opened:
            return None
        self._events.breaker(True, reason)
        self._log.error("circuit breaker opened: consumption paused for the portal", reason=reason)
        return hold

    async def probe(self, unit: WorkUnit, attempt: Attempt) -> list[Result]:
        """Wait for the cool-down, then send the held-back operation again as the gate's probe."""
        while True:
            state = await self._breaker.state()
            wait = state.until - self._clock()
            if not state.open:
                break
            due = not state.manual and wait <= 0
            if due and await self._breaker.acquire_probe(self._settings.read_timeout_s + 5):
                break
            await asyncio.sleep(min(max(wait, 0.05), 1.0))
        results = await attempt(unit)
        if any(shuts_portal(r) for r in results):
            await self._breaker.release_probe()
        else:
            await self._close("circuit breaker closed: probe succeeded", ident=unit.ident)
        return results

    async def _close(self, message: str, **fields: str) -> None:
        await self._breaker.close()
        self._events.breaker(False, "probe succeeded")
        self._log.info(message, **fields)
