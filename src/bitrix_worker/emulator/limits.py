"""The two Bitrix24 limits as pure classes: every method takes ``now`` (Unix seconds) for an injected clock.

``LeakyBucket`` models the portal's request-intensity counter (docs ``limits.md``): each *executed* request
adds one, the counter drains ``drain_per_s`` per second, and a request that would take the counter past
``burst`` is refused with 503 before it runs.
Refused requests do not add to the counter: the portal counts requests it lets through, and a client that
keeps bouncing off the limit must not lock itself out for longer than its own load justifies.
The drain is continuous by default; ``per_second=True`` models the docs' wording literally ("the counter
drops by 2 every second"): the counter drops by ``drain_per_s`` at each whole second of the clock and not
in between, so a client pacing itself evenly just under the rate can still find the counter one request
higher than a continuous drain would (the benchmarks run the worker against both).

``OperatingBudget`` models the per-method resource limit: execution time is summed per method in ten
one-minute baskets (``window_s / 10`` each; a basket lives ``window_s`` from its first call); when the sum
over the window reaches ``limit_s`` the next call of that method is refused with 429 before it runs.
``reset_at`` is when the oldest basket drops out.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

BASKETS = 10


@dataclass(slots=True)
class LeakyBucket:
    burst: int = 50
    drain_per_s: float = 2.0
    level: float = 0.0
    updated: float | None = None
    per_second: bool = False  # drain in whole-second steps (at each integer ``now``) instead of continuously

    def _elapsed(self, since: float, now: float) -> float:
        """Seconds of drain between two instants: whole-second boundaries crossed, when stepped."""
        return float(math.floor(now) - math.floor(since)) if self.per_second else now - since

    def _drain(self, now: float) -> None:
        if self.updated is not None and now > self.updated:
            self.level = max(0.0, self.level - self._elapsed(self.updated, now) * self.drain_per_s)
        if self.updated is None or now > self.updated:
            self.updated = now

    def current(self, now: float) -> float:
        """Counter value at ``now``."""
        self._drain(now)
        return self.level

    def try_acquire(self, now: float, cost: float = 1.0) -> bool:
        """Count one request if it fits under ``burst``; False (nothing counted) when it must be refused."""
        self._drain(now)
        if self.level + cost > self.burst + 1e-9:
            return False
        self.level += cost
        return True

    def seconds_until_free(self, now: float, cost: float = 1.0) -> float:
        """How long a refused caller would have to wait for ``cost`` to fit."""
        self._drain(now)
        excess = self.level + cost - self.burst
        if excess <= 1e-9 or self.drain_per_s <= 0:
            return 0.0 if excess <= 1e-9 else float("inf")
        if self.per_second:  # the next whole second, then as many more as the excess needs
            return math.floor(now) + math.ceil(excess / self.drain_per_s - 1e-9) - now
        return excess / self.drain_per_s

    def reset(self) -> None:
        self.level = 0.0
        self.updated = None


@dataclass(slots=True)
class _Baskets:
    # [basket index (now // basket_s), first call time, accumulated seconds], oldest first
    items: deque[list[float]] = field(default_factory=deque)
    total: float = 0.0


@dataclass(slots=True)
class OperatingBudget:
    limit_s: float = 480.0
    window_s: float = 600.0
    _methods: dict[str, _Baskets] = field(default_factory=dict)

    @property
    def basket_s(self) -> float:
        return self.window_s / BASKETS

    def _expire(self, baskets: _Baskets, now: float) -> None:
        while baskets.items and baskets.items[0][1] + self.window_s <= now:
            baskets.total -= baskets.items.popleft()[2]
        if not baskets.items:
            baskets.total = 0.0

    def operating(self, method: str, now: float) -> float:
        """Seconds ``method`` has used inside the window ending at ``now``."""
        baskets = self._methods.get(method)
        if baskets is None:
            return 0.0
        self._expire(baskets, now)
        return max(0.0, baskets.total)

    def blocked(self, method: str, now: float) -> bool:
        """True when the next call of ``method`` must be refused with OPERATION_TIME_LIMIT."""
        return self.operating(method, now) >= self.limit_s

    def reset_at(self, method: str, now: float) -> float:
        """Unix time the oldest basket of ``method`` drops out (``now + window`` if it has none)."""
        baskets = self._methods.get(method)
        if baskets is not None:
            self._expire(baskets, now)
            if baskets.items:
                return baskets.items[0][1] + self.window_s
        return now + self.window_s

    def record(self, method: str, seconds: float, now: float) -> None:
        """Charge ``seconds`` of execution to ``method`` (zero-time calls leave no basket)."""
        if seconds <= 0:
            return
        baskets = self._methods.setdefault(method, _Baskets())
        self._expire(baskets, now)
        index = float(now // self.basket_s)
        if baskets.items and baskets.items[-1][0] == index:
            baskets.items[-1][2] += seconds
        else:
            baskets.items.append([index, now, seconds])
        baskets.total += seconds

    def methods(self) -> list[str]:
        """Methods that have been charged since the last reset."""
        return list(self._methods)

    def reset(self) -> None:
        self._methods.clear()
