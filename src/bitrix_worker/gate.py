"""The portal gate: one room for everything that stops and restarts a whole portal's traffic.

Bitrix24 problems come in two sizes. An operation's own (a bad field, a deleted deal, a command that fails
inside a batch whose other commands succeed) is the policy's business and spends the operation's budget. A
portal's (a revoked webhook, an outage of 5xx/HTML answers, refused connections or timeouts across requests,
OVERLOAD_LIMIT) is the gate's: it pauses the portal for every worker (state in Redis, ``redis/breaker.py``),
the backlog and the operations in flight are held without spending anything, one worker probes with a
read-only call at a growing interval, and the portal reopens when a probe succeeds. Nothing is dead-lettered
for a portal's fault, however long it lasts.

The gate tells the two apart with the portal's health record: ``ok_at`` (the last answered request, any
worker) and ``streak`` (whole-request failures since). A whole request that fails is the portal's fault the
first time; it is an operation's own when the same operation failed before and the portal has answered
someone since (it keeps failing while the portal is healthy). Auth and OVERLOAD_LIMIT on a whole request
pause the portal at once; other faults after ``portal_failure_threshold`` in a row.

An operator may also pause a portal by hand; then nobody probes and only ``resume`` reopens it. One gate per
portal: the single-webhook set-up has one; a multi-portal deployment makes one per portal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import structlog

from .bitrix.client import BitrixClient
from .config import Settings
from .errors import BitrixError, BitrixWorkerError, StoreError
from .events import WorkerEvents
from .records import HistoryEntry
from .redis.breaker import Breaker, BreakerState
from .redis.connection import RedisClient
from .redis.limits import Limiter, LimiterState
from .sending import Answered, Failed
from .taxonomy import Classification, ErrorClass, Execution
from .units import WorkUnit
from .values import Clock, ms

GateState = BreakerState
PROBE_LOCK_S = 10.0  # how long the read-only probe's lock lives if its worker dies mid-probe
OK_WRITE_EVERY_S = 1.0  # a busy worker records the portal's health at most this often
PORTAL_CLASSES = frozenset({ErrorClass.AUTH, ErrorClass.BLOCKED, ErrorClass.SERVER_ERROR, ErrorClass.NETWORK})
_SUSPECT_VALUES = frozenset(c.value for c in PORTAL_CLASSES)
_AT_ONCE = frozenset({ErrorClass.AUTH, ErrorClass.BLOCKED})


def portal_suspect(c: Classification) -> bool:
    """Could this failure be the portal's rather than the operation's?"""
    return c.error_class in PORTAL_CLASSES


def own_failure(history: Sequence[HistoryEntry], ok_at_ms: int) -> bool:
    """Is a whole-request failure of this operation its own? Yes when it failed the same way before while
    the portal was healthy: its earlier failure was a command of its own inside an answered batch, or the
    portal has answered someone since its earlier whole-request failure (it keeps failing while the portal
    is healthy). Its first such failure is the portal's until proven otherwise."""
    for h in history:
        if h.get("kind") != "attempt" or h.get("class") not in _SUSPECT_VALUES:
            continue
        if not h.get("portal") or ok_at_ms > h.get("at_ms", 0):
            return True
    return False


@dataclass(frozen=True, slots=True)
class PortalView:
    """What one answer says about the portal: the failure that may be the portal's, and its health record."""

    failure: Classification | None  # the whole request failed (or every command in it) in a portal's way
    ok_at_ms: int = 0  # the portal's last answered request (any worker)


def whole_request_failure(answer: Answered | Failed) -> Classification | None:
    if isinstance(answer, Failed):
        return answer.classification if portal_suspect(answer.classification) else None
    errors = list(answer.errors.values())
    if answer.results or not errors or not all(portal_suspect(e) for e in errors):
        return None
    return errors[0]


def _reason(c: Classification) -> str:
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
        self._ok_written = float("-inf")
        self._waiting_since: float | None = None
        self._shut_here: Classification | None = None  # this process paused the portal (``paused_here``)
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
            settings.keys.breaker(settings.portal_name),
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
        self._events.breaker(True, reason)  # the workers log it when they start waiting

    async def resume(self) -> None:
        """Reopen now, whatever paused the portal (a fixed webhook need not wait out its cool-down)."""
        await self._breaker.close()
        self._shut_here = None
        self._events.breaker(False, "resumed")

    # ---- health, as the worker's requests see it ------------------------------------------------------

    async def assess(self, answer: Answered | Failed, units: Sequence[WorkUnit]) -> PortalView:
        """Whether this answer shows a failure that may be the portal's, and the portal's health record; the
        gate counts it unless every operation in the request is failing on its own."""
        c = whole_request_failure(answer)
        try:
            if c is None:
                if isinstance(answer, Answered):
                    await self.note_answer()
                return PortalView(None)
            ok_at = await self.healthy_since_ms()
            if not all(own_failure(u.history, ok_at) for u in units):
                await self.note_portal_failure(c)
        except StoreError as exc:
            # Bookkeeping after the portal has answered: keep the answer. Without the health record the
            # failure counts as the portal's (it spends nothing), which is the safe side.
            self._log.warning("could not update the portal's health record", error=str(exc))
            return PortalView(c)
        return PortalView(c, ok_at)

    async def note_answer(self) -> None:
        """The portal answered a request (whatever the commands said): it is healthy as of now."""
        now = self._clock()
        if now - self._ok_written >= OK_WRITE_EVERY_S:
            self._ok_written = now
            await self._breaker.record_ok(ms(self._clock))

    async def note_portal_failure(self, c: Classification) -> None:
        """A whole request failed in a way that may be the portal's: count it, and pause the portal when
        the failures are the portal's (auth and OVERLOAD_LIMIT at once, others after a streak)."""
        streak = await self._breaker.record_failure()
        if c.error_class in _AT_ONCE or streak >= self._settings.portal_failure_threshold:
            blocked = c.error_class is ErrorClass.BLOCKED
            self._shut_here = replace(
                c, execution=Execution.NOT_EXECUTED, description=f"not sent: {_reason(c)}"
            )
            await self._shut(_reason(c), cooldown_s=self._settings.blocked_cooldown_s if blocked else None)

    def paused_here(self) -> Classification | None:
        """Set from the moment this process paused the portal until it sees it open again: a request that
        got its slot meanwhile is not sent (``Sender``), since it would meet the same refusal; its units are
        held like those of the request that paused it, nothing spent. Read in memory, no round trip."""
        return self._shut_here

    async def healthy_since_ms(self) -> int:
        return (await self._breaker.state()).ok_at_ms

    async def _shut(self, reason: str, *, cooldown_s: float | None = None) -> None:
        opened, state = await self._breaker.trip(reason, cooldown_s=cooldown_s)
        if opened:
            self._events.breaker(True, reason)
            self._log.error(
                "portal paused: its failures are the portal's, not the operations'; holding the backlog",
                reason=reason,
                probe_in_s=round(state.until - self._clock(), 1),
            )

    # ---- for the worker loop --------------------------------------------------------------------------

    async def is_shut(self) -> bool:
        return (await self._breaker.state()).open

    async def state_with(self, limiter: Limiter) -> tuple[GateState, LimiterState]:
        """The gate's state and ``limiter``'s in one round trip (``Portal.claim_wait``)."""
        return await self._breaker.state_with(limiter)

    async def holds(self, state: GateState | None = None) -> float | None:
        """None while the portal is open; else how long to wait before asking again.

        After each cool-down one worker (the one that wins the probe lock) probes with a read-only call.
        ``state``: the gate's state when the caller has just read it (``state_with``).
        """
        if state is None:
            state = await self._breaker.state()
        if not state.open:
            self._shut_here = None
            if self._waiting_since is not None:
                waited = round(self._clock() - self._waiting_since, 1)
                self._log.info("portal open again; consuming", waited_s=waited)
                self._waiting_since = None
            return None
        now = self._clock()
        if self._waiting_since is None:
            self._waiting_since = now
            until = "an operator resumes it" if state.manual else f"{max(0.0, state.until - now):.0f} s"
            self._log.warning("portal paused; waiting", reason=state.reason, next_probe=until)
        if state.manual:
            return 1.0
        if now < state.until or not await self._breaker.acquire_probe(PROBE_LOCK_S):
            return min(1.0, max(0.05, state.until - now))
        await self._probe_read_only()
        return 0.0

    async def _probe_read_only(self) -> None:
        """A read-only call that spends no operation: does the portal answer again?"""
        if self._client is None or self._limiter is None:
            raise BitrixWorkerError("a probing gate needs the portal's client and limiter")
        await self._limiter.acquire()
        try:
            await self._client.fields("deal")
        except BitrixError as exc:
            c = exc.classification
            if c.error_class is ErrorClass.NETWORK and c.execution is Execution.NOT_EXECUTED:
                await self._limiter.refund()
            if portal_suspect(c):
                _, state = await self._breaker.trip(f"probe failed: {_reason(c)}")
                await self._breaker.release_probe()
                self._log.warning(
                    "portal probe failed; still paused",
                    until_s=round(state.until - self._clock()),
                    reason=_reason(c),
                )
                return
        await self._breaker.close()
        self._shut_here = None
        await self._breaker.record_ok(ms(self._clock))
        self._events.breaker(False, "probe succeeded")
        self._log.info("portal probe succeeded: reopened")
