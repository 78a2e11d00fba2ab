"""One portal and everything that is per portal: its client, its shared request bucket, its method pauses
and its gate. The single-webhook set-up is one ``Portal``; a multi-portal deployment makes one per portal
from the same settings shape."""

from __future__ import annotations

from dataclasses import dataclass

from .bitrix.client import BitrixClient
from .config import Settings
from .events import WorkerEvents
from .gate import PortalGate
from .redis.connection import RedisClient
from .redis.limits import Limiter, MethodPauses


@dataclass(slots=True)
class Portal:
    name: str
    client: BitrixClient
    limiter: Limiter
    pauses: MethodPauses
    gate: PortalGate

    @classmethod
    def from_settings(
        cls, redis: RedisClient, settings: Settings, client: BitrixClient, events: WorkerEvents
    ) -> Portal:
        name = settings.webhook.portal
        keys = settings.keys
        limiter = Limiter(
            redis,
            keys.limiter(name),
            rate_per_s=settings.rate_per_s,
            burst=settings.rate_burst,
            safety=settings.rate_fraction,
        )
        pauses = MethodPauses(
            redis,
            keys.method_pause(name),
            budget_s=settings.operating_budget_s,
            safety=settings.operating_safety,
        )
        gate = PortalGate.from_settings(redis, settings, limiter=limiter, client=client, events=events)
        return cls(name, client, limiter, pauses, gate)

    async def claim_wait_s(self, ahead_s: float) -> float | None:
        """How long to wait before claiming more work, or None to claim now.

        Claim no further ahead than the shared limiter can send: entries claimed while the portal's bucket is
        booked for seconds ahead would only wait in this process's memory; if it dies they are redelivered
        (and counted as deliveries) for nothing. Claiming just in time keeps the pending list honest and
        bounds what a crash hands to the reclaimer.
        """
        wait = (await self.limiter.state()).next_free_s
        return None if wait <= ahead_s else min(wait - ahead_s, 1.0)
