"""Shared limits in Redis: the portal's request bucket and its per-method pauses.

Both are shared by every worker process on every host, because Bitrix24 counts requests per portal and
source IP, not per process (docs/errors.md, rate_limited / method_limited). The bucket is hand-written in
Lua (``lua/limiter.lua``) because no maintained library offers a GCRA bucket that many processes share,
books a slot when the request is sent, and slows down for everyone after a refusal.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from ..values import Clock
from .connection import RedisClient
from .errors import translated
from .scripts import register

RECOVERY_PER_S = 0.02  # the slow-down factor climbs back from 0.5 to 1.0 in 25 s without refusals


@dataclass(frozen=True, slots=True)
class LimiterState:
    factor: float
    backlog_s: float  # how far ahead of now the bucket is booked
    next_free_s: float = 0.0  # how long until the next request may be sent


class Limiter:
    """GCRA leaky bucket per portal; ``acquire`` waits until this request may be sent."""

    def __init__(
        self,
        client: RedisClient,
        key: str,
        *,
        rate_per_s: float,
        burst: int,
        safety: float = 1.0,
        max_reserve_s: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._key = key
        self._rate = rate_per_s * safety
        self._burst = max(1.0, burst * safety)
        self._max_reserve_ms = int(max_reserve_s * 1000)
        self._clock = clock
        self._script = register(client, "limiter")

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))

    def _args(self, command: str) -> list[str | float]:
        return [command, self._rate, self._burst, self._max_reserve_ms, self._now_arg(), RECOVERY_PER_S]

    async def _run(self, command: str) -> Any:
        with translated("limiter"):
            return await self._script(keys=[self._key], args=self._args(command))

    async def reserve(self) -> float:
        """Book the next slot; returns seconds to wait (negative: nothing booked, ask again after that)."""
        return int(await self._run("acquire")) / 1000

    async def acquire(self) -> float:
        """Wait for and take one request slot; returns the seconds waited."""
        waited = 0.0
        while True:
            wait = await self.reserve()
            if wait >= 0:
                if wait > 0:
                    await asyncio.sleep(wait)
                return waited + wait
            await asyncio.sleep(-wait - self._max_reserve_ms / 1000 + 0.001)
            waited += -wait - self._max_reserve_ms / 1000

    async def penalize(self) -> None:
        await self._run("penalize")

    async def reset(self) -> None:
        """Forget the slow-down that refusals caused (an operator's ``portal reset``)."""
        await self._run("reset")

    async def refund(self) -> None:
        """Give back the slot of a request that never reached the portal (its connection was refused):
        the portal did not count it, so neither do we, and its fresh burst is there when it comes back."""
        await self._run("refund")

    async def state(self) -> LimiterState:
        return _state(await self._run("state"))

    def queue_state(self, pipe: Any) -> None:
        """Queue the read-only ``state`` on a pipeline (``Breaker.state_with``), by EVALSHA alone: redis-py
        would ask ``SCRIPT EXISTS`` first on every execute of a plain pipeline that runs a script, one more
        round trip. ``state_from`` runs the script itself if Redis did not know it."""
        pipe.evalsha(self._script.sha, 1, self._key, *self._args("state"))

    def queue_reserve(self, pipe: Any) -> None:
        """``reserve`` queued on a pipeline, by EVALSHA alone as in ``queue_state`` (``paused_with``)."""
        pipe.evalsha(self._script.sha, 1, self._key, *self._args("acquire"))

    @staticmethod
    def reserved_from(answer: Any) -> float | None:
        """Seconds until the slot ``queue_reserve`` booked; None when it booked none (the wait was longer than
        ``max_reserve_s``, or Redis did not know the script): ``acquire`` then asks again, as it would."""
        if isinstance(answer, Exception):
            return None
        wait = int(answer) / 1000
        return wait if wait >= 0 else None

    async def state_from(self, answer: Any) -> LimiterState:
        """The state ``queue_state`` read, or read again when the pipeline could not run it (NOSCRIPT)."""
        if isinstance(answer, Exception):
            return await self.state()
        return _state(answer)


def _state(answer: Any) -> LimiterState:
    factor, tat, now, next_ms = answer
    return LimiterState(
        float(factor), max(0.0, (float(tat) - float(now)) / 1000), max(0.0, float(next_ms) / 1000)
    )


class MethodPauses:
    """Per-method pauses (OPERATION_TIME_LIMIT) and the operating time each method has used."""

    def __init__(
        self, client: RedisClient, key: str, *, budget_s: float, safety: float, clock: Clock = time.time
    ) -> None:
        self._client = client
        self._key = key
        self._threshold_s = budget_s * safety
        self._clock = clock
        self._unwritten: dict[str, str] = {}  # operating:<method> -> JSON, written with the next settlement

    @property
    def key(self) -> str:
        return self._key

    def take_unwritten(self) -> dict[str, str]:
        """The operating times observed since the last call, as hash fields; the caller writes them (the
        settlement carries them: one Redis round trip fewer per request, ``OperationQueue.settle``)."""
        fields, self._unwritten = self._unwritten, {}
        return fields

    async def flush(self) -> None:
        """Write the operating times not yet written (before reading them back, or when nothing settles)."""
        fields = self.take_unwritten()
        if fields:
            with translated("method tracking"):
                await self._client.hset(self._key, mapping=fields)  # type: ignore[arg-type]

    async def pause(self, method: str, until: float) -> None:
        with translated("method pause"):
            current = await self._client.hget(self._key, f"pause:{method}")
            if current is None or float(current) < until:
                await self._client.hset(self._key, f"pause:{method}", f"{until:.3f}")

    async def paused_for(self, methods: list[str]) -> dict[str, float]:
        """Seconds each paused method must still wait; methods not paused are absent."""
        if not methods:
            return {}
        with translated("method pause"):
            values = await self._client.hmget(self._key, [f"pause:{m}" for m in methods])
        return self._remaining(methods, values)

    async def paused_with(
        self, methods: list[str], limiter: Limiter
    ) -> tuple[dict[str, float], float | None]:
        """``paused_for`` and ``limiter``'s booking of the next slot (``Limiter.reserved_from``), in one round
        trip: the request that follows the check is booked with it (``Sender.paused_for``).

        Neither depends on the other's answer, so a pipeline without MULTI is enough; on a Cluster, redis-py
        sends each node its part, at the same time."""
        fields = [f"pause:{m}" for m in methods]
        with translated("method pause"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hmget(self._key, fields)
                limiter.queue_reserve(pipe)
                values, booked = await pipe.execute(raise_on_error=False)
            if isinstance(values, Exception):
                raise values
        return self._remaining(methods, values), limiter.reserved_from(booked)

    def _remaining(self, methods: list[str], values: list[Any]) -> dict[str, float]:
        now = self._clock()
        return {m: float(v) - now for m, v in zip(methods, values, strict=True) if v and float(v) > now}

    async def observe(self, method: str, operating: float | None, reset_at: float | None) -> float | None:
        """Track ``time.operating``; pause the method before it reaches the portal's budget.

        Returns the pause end (unix time) when one was set. The figure itself is only kept here until the
        batch settles (``take_unwritten``): it is read back only after a method's 429 (``reset_at``), which
        writes what is pending first. A pause is written at once: every worker must see it before its next
        request.
        """
        if operating is None:
            return None
        self._unwritten[f"operating:{method}"] = json.dumps([operating, reset_at])
        if operating >= self._threshold_s and reset_at:
            await self.pause(method, reset_at)
            return reset_at
        return None

    async def reset_at(self, method: str) -> float | None:
        """``operating_reset_at`` from the last successful answer of this method (for a 429)."""
        await self.flush()
        with translated("method tracking"):
            raw = await self._client.hget(self._key, f"operating:{method}")
        if raw is None:
            return None
        _, reset = json.loads(raw)
        return float(reset) if reset else None
