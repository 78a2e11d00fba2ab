"""One portal and everything that is per portal: its client, its shared request bucket, its method pauses
and its gate. The single-webhook set-up is one ``Portal``; a multi-portal deployment makes one per portal
from the same settings shape."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .bitrix.client import BitrixClient
from .bitrix.schemas import first_commands
from .config import Settings
from .crm import entity_spec
from .errors import BitrixError, ConfigError
from .events import WorkerEvents
from .gate import PortalGate
from .redis.connection import RedisClient
from .redis.limits import Limiter, MethodPauses
from .taxonomy import Classification, ErrorClass, Execution


@dataclass(slots=True)
class Portal:
    name: str
    client: BitrixClient
    limiter: Limiter
    pauses: MethodPauses
    gate: PortalGate
    primed: tuple[float, dict[str, Any]] | None = None  # the start check's answers (``take_primed``)

    @classmethod
    def from_settings(
        cls, redis: RedisClient, settings: Settings, client: BitrixClient, events: WorkerEvents
    ) -> Portal:
        name = settings.portal_name
        keys = settings.keys
        limiter = Limiter(
            redis,
            keys.limiter(name),
            rate_per_s=settings.rate_per_s,
            burst=settings.limiter_burst,
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
        return _ahead((await self.limiter.state()).next_free_s, ahead_s)

    async def claim_wait(self, ahead_s: float) -> float | None:
        """The gate's hold (``gate.holds``: paused, or probing), else ``claim_wait_s``; or None to claim now.

        Both states are read in one round trip, before every claim."""
        gate_state, bucket = await self.gate.state_with(self.limiter)
        wait = await self.gate.holds(gate_state)
        return _ahead(bucket.next_free_s, ahead_s) if wait is None else wait

    async def check(self) -> None:
        """One read-only request before consuming: a webhook that cannot work stops the start with one line
        naming the setting, instead of being found after a cool-down. A portal that is merely unwell
        (5xx, limits) is the gate's business, not a reason not to start.

        The request asks what the deal schema's first request asks (``crm.deal.fields``, currencies,
        pipelines), so field validation starts from its answers (``take_primed``): one request fewer."""
        await self.limiter.acquire()
        setting = "BITRIX_WEBHOOK_URL" if self.client.webhook is not None else "BITRIX_WORKER_PORTAL"
        commands = first_commands(entity_spec("deal"))
        try:
            answer = await self.client.batch(commands, halt=True)
        except BitrixError as exc:
            c = exc.classification
            if c.error_class is ErrorClass.AUTH:
                raise ConfigError(setting, _refused(c)) from None
            if c.error_class is ErrorClass.NETWORK and c.execution is Execution.NOT_EXECUTED:
                raise ConfigError(setting, f"cannot reach {self.name}: {c.description}") from None
            return
        refused = answer.errors.get("fields")
        if refused is not None and refused.error_class is ErrorClass.AUTH:  # e.g. no crm scope
            raise ConfigError(setting, _refused(refused))
        if all(name in answer.results for name in commands):
            self.primed = (time.monotonic(), answer.results)

    def take_primed(self, entity: str) -> dict[str, Any] | None:
        """The start check's answers, once, for the deal schema's first request while they are fresh."""
        if entity != "deal" or self.primed is None:
            return None
        at, answers = self.primed
        self.primed = None
        return answers if time.monotonic() - at < PRIMED_FOR_S else None


PRIMED_FOR_S = 60.0  # how long the start check's answers may stand in for the deal schema's first request


def _ahead(next_free_s: float, ahead_s: float) -> float | None:
    return None if next_free_s <= ahead_s else min(next_free_s - ahead_s, 1.0)


def _refused(c: Classification) -> str:
    code = (c.bitrix_code or "").upper()
    hint = {
        "INVALID_CREDENTIALS": "wrong user id or secret, or the webhook was deleted",
        "INSUFFICIENT_SCOPE": "the webhook lacks the crm scope",
        "ERROR_METHOD_NOT_FOUND": "check the URL's path (https://<portal>/rest/<user_id>/<secret>/)",
        "NO_AUTH_FOUND": "check the URL's path (https://<portal>/rest/<user_id>/<secret>/)",
    }.get(code, "the portal refuses this webhook")
    what = c.bitrix_code or (f"HTTP {c.http_status}" if c.http_status else c.error_class.value)
    return f"the portal refused a test call ({what}): {hint}"
