"""The portal gate's state in Redis: one hash per portal that every worker reads before it consumes.

``gate.PortalGate`` decides when to shut, probe and reopen; this class only stores and reads that state,
atomically where two workers could race (``lua/breaker.lua``: one trip per outage).

    open          "1" while nobody may consume
    reason        why (an error class and code, or an operator's words)
    until         unix time the cool-down ends (a probe may go then)
    cooldown      the current cool-down (doubles after a failed probe, up to the maximum)
    trips         how many times it has been opened since the last reset
    probe_owner   a worker holding a real operation to use as the first probe
    manual        "1" when an operator paused the portal: no probe, only ``resume`` reopens it
    ok_at         ms of the portal's last answered request (any worker): "proven healthy since"
    streak        whole-request failures since then, across workers
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..values import Clock, as_text
from .connection import RedisClient
from .errors import translated
from .limits import Limiter, LimiterState
from .scripts import register


@dataclass(frozen=True, slots=True)
class BreakerState:
    open: bool
    reason: str = ""
    until: float = 0.0
    cooldown_s: float = 0.0
    trips: int = 0
    probe_owner: str = ""  # a worker holding a real operation to use as the first probe
    manual: bool = False  # paused by an operator: only a resume reopens it
    opened_at: float = 0.0
    ok_at_ms: int = 0  # the portal's last answered request (any worker)
    streak: int = 0  # whole-request failures since then

    @property
    def paused(self) -> bool:
        return self.open


class Breaker:
    """Circuit-breaker state of one portal, shared by every worker process."""

    def __init__(
        self,
        client: RedisClient,
        key: str,
        *,
        cooldown_s: float,
        max_cooldown_s: float,
        clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._key = key
        self._cooldown_s = cooldown_s
        self._max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._script = register(client, "breaker")

    @property
    def _probe_key(self) -> str:
        return f"{self._key}:probe"

    async def state(self) -> BreakerState:
        with translated("breaker"):
            return _state(await self._client.hgetall(self._key))

    async def state_with(self, limiter: Limiter) -> tuple[BreakerState, LimiterState]:
        """This state and ``limiter``'s, read together: one round trip before each claim instead of two.

        Both reads change nothing, so a pipeline without MULTI is enough. On a Cluster the two keys may sit
        in different slots; redis-py's cluster pipeline then sends each node its part, at the same time."""
        with translated("breaker"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._key)
                limiter.queue_state(pipe)
                raw, bucket = await pipe.execute(raise_on_error=False)
            if isinstance(raw, Exception):
                raise raw
            return _state(raw), await limiter.state_from(bucket)

    async def trip(
        self, reason: str, *, cooldown_s: float | None = None, probe_owner: str = ""
    ) -> tuple[bool, BreakerState]:
        """Open the breaker; returns whether this call opened it (False: a running cool-down already covers
        this outage) and the resulting state. After a cool-down ran out, a trip doubles it."""
        args: list[str | float] = [
            f"{self._clock():.3f}",
            reason,
            self._cooldown_s,
            self._max_cooldown_s,
            "" if cooldown_s is None else f"{cooldown_s:.3f}",
            probe_owner,
        ]
        with translated("breaker"):
            tripped, until, cooldown, trips = await self._script(keys=[self._key], args=args)
        opened = as_text(tripped) == "1"
        state = BreakerState(
            True, reason, float(until), float(cooldown), int(trips), probe_owner if opened else ""
        )
        return opened, state

    async def pause(self, reason: str) -> None:
        """An operator's pause: open with no cool-down end; workers wait and never probe."""
        now = f"{self._clock():.3f}"
        with translated("breaker"):
            await self._client.hset(
                self._key,
                mapping={"open": "1", "manual": "1", "reason": reason, "until": "0", "opened_at": now},
            )

    async def record_ok(self, at_ms: int) -> None:
        """The portal answered a request: it has proven healthy as of ``at_ms``; the failure streak ends."""
        with translated("breaker"):
            await self._client.hset(self._key, mapping={"ok_at": at_ms, "streak": 0})

    async def record_failure(self) -> int:
        """One more whole-request failure across workers; returns the streak."""
        with translated("breaker"):
            return int(await self._client.hincrby(self._key, "streak", 1))

    async def close(self) -> None:
        """Reopen the portal now (a probe succeeded, or an operator resumed it)."""
        with translated("breaker"):
            await self._client.delete(self._key, self._probe_key)

    async def release_probe(self) -> None:
        with translated("breaker"):
            await self._client.delete(self._probe_key)

    async def acquire_probe(self, ttl_s: float) -> bool:
        """Take the probe lock: one worker probes after a cool-down, the others keep waiting."""
        with translated("breaker"):
            return bool(await self._client.set(self._probe_key, "1", nx=True, px=max(1, int(ttl_s * 1000))))


def _state(hash_: dict[Any, Any]) -> BreakerState:
    raw = {as_text(k): as_text(v) for k, v in hash_.items()}
    ok_at_ms, streak = int(raw.get("ok_at", 0)), int(raw.get("streak", 0))
    if raw.get("open") != "1":
        return BreakerState(open=False, trips=int(raw.get("trips", 0)), ok_at_ms=ok_at_ms, streak=streak)
    return BreakerState(
        open=True,
        reason=raw.get("reason", ""),
        until=float(raw.get("until", 0)),
        cooldown_s=float(raw.get("cooldown", 0)),
        trips=int(raw.get("trips", 0)),
        probe_owner=raw.get("probe_owner", ""),
        manual=raw.get("manual") == "1",
        opened_at=float(raw.get("opened_at", 0)),
        ok_at_ms=ok_at_ms,
        streak=streak,
    )
