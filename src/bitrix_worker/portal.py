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
            safety=settings.rate_safety,
        )
        pauses = MethodPauses(
            redis,
            keys.method_pause(name),
            budget_s=settings.operating_budget_s,
            safety=settings.operating_safety,
        )
        gate = PortalGate.from_settings(redis, settings, limiter=limiter, client=client, events=events)
        return cls(name, client, limiter, pauses, gate)
