"""One request to the portal through the shared limiter: the only place the worker waits out refusals.

A request is counted when it is sent (the limiter books a slot first). A ``QUERY_LIMIT_EXCEEDED`` refusal ran
nothing, so the same request is sent again after a backoff, slowing the shared limiter for every worker;
it never spends an operation's failure budget. How long to wait and when to stop is the policy's
(``policy.refusal_delay``: the refusals an operation may meet in all); the refusals waited out here are
reported so that they count towards each operation's cap. Every other failure is returned as a ``Failed``
for the policy to decide per operation.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog

from .bitrix.client import BitrixClient
from .bitrix.methods import Command
from .errors import BitrixError, StoreError
from .events import WorkerEvents
from .policy import RetryPolicy, refusal_delay
from .redis.limits import Limiter, MethodPauses
from .taxonomy import Classification, ErrorClass, Execution, TimeInfo

_booked: ContextVar[list[float] | None] = ContextVar("bitrix_worker_booked_slot", default=None)
"""The slot ``Sender.paused_for`` booked for this task's next request: the monotonic time it may leave. A
list, emptied when taken, so that a task started meanwhile (it copies the context) cannot take it twice."""

NOT_RUN = Classification(ErrorClass.SERVER_ERROR, Execution.NOT_EXECUTED, description="command was not run")
"""A command missing from a batch answer (neither a result nor an error): it did not run."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The whole request failed: every command in it shares this classification."""

    classification: Classification
    method: str
    elapsed_s: float  # since it was sent: how long the portal may already have been running it
    refusals: int = 0  # rate-limit refusals waited out before this failure


@dataclass(slots=True)
class Answered:
    """Per-command results and errors (one command alone looks like a batch of one)."""

    results: dict[str, Any]
    errors: dict[str, Classification]
    refusals: int = 0  # rate-limit refusals waited out before this answer


class Sender:
    def __init__(
        self,
        client: BitrixClient,
        *,
        limiter: Limiter,
        pauses: MethodPauses,
        events: WorkerEvents,
        policy: RetryPolicy,
        rng: random.Random,
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.pauses = pauses
        self.events = events
        self.policy = policy
        self.rng = rng
        self.paused: Callable[[], Classification | None] | None = None  # ``PortalGate.paused_here``
        self.log = structlog.get_logger("bitrix_worker.sending")

    async def send(
        self,
        commands: dict[str, Command],
        *,
        refused_before: int = 0,
        halt: bool = False,
        more: Callable[[], Awaitable[dict[str, Command]]] | None = None,
    ) -> Answered | Failed:
        """One request (``batch`` for several commands, a plain call for one).

        ``refused_before``: the most refusals any operation in it has already met (its cap is shared).
        ``halt``: a chain of one unit's commands (``followups.lone_chain``): the portal stops at the first
        failed command, so no later one reads a reference to it.
        ``more``: called each time the limiter grants the request its slot, right before it is sent; the
        commands it returns join the request (``packing``: independent commands that waited meanwhile).
        """
        refusals = 0
        while True:
            waited = await self._slot()
            if waited > 0:
                self.events.limiter_wait(waited)
            if more is not None:
                commands = {**commands, **await more()}
            method = "batch" if len(commands) > 1 else next(iter(commands.values())).method
            held = self.paused() if self.paused is not None else None
            if held is not None:  # this process paused the portal while the request waited for its slot
                await self.limiter.refund()
                return Failed(held, method, 0.0, refusals)
            started = time.monotonic()
            try:
                answered = await self._request(commands, method, halt)
                self.events.call(method, "ok", time.monotonic() - started)
                answered.refusals = refusals
                return answered
            except BitrixError as exc:
                c = exc.classification
                self.events.call(method, c.error_class.value, time.monotonic() - started)
                delay = None
                if c.error_class is ErrorClass.RATE_LIMITED:
                    delay = refusal_delay(refused_before + refusals + 1, c, self.policy, self.rng)
                if delay is None:
                    if c.error_class is ErrorClass.NETWORK and c.execution is Execution.NOT_EXECUTED:
                        await self.limiter.refund()  # it never reached the portal, which did not count it
                    return Failed(c, method, time.monotonic() - started, refusals)
                refusals += 1
                await self.limiter.penalize()
                self.log.info(
                    "rate limited by Bitrix24; waiting", method=method, bounce=refusals, delay_s=delay
                )
                await asyncio.sleep(delay)

    async def paused_for(self, methods: list[str]) -> dict[str, float]:
        """``MethodPauses.paused_for`` (seconds each paused method must still wait), with the limiter's slot
        for the request that follows it in this task booked in the same round trip: that request's
        ``send`` waits out the booked slot instead of asking the limiter (one round trip fewer per batch).

        Call it right before ``send``. When every method is paused nothing will be sent: the slot is given
        back (``Limiter.refund``), as for a request that never reached the portal."""
        if not methods:
            return {}
        paused, wait = await self.pauses.paused_with(methods, self.limiter)
        if wait is None:
            _booked.set(None)
        elif len(paused) == len(methods):
            _booked.set(None)
            await self.limiter.refund()
        else:
            _booked.set([time.monotonic() + wait, wait])
        return paused

    async def _slot(self) -> float:
        """Wait for this request's slot: the one ``paused_for`` booked, else ``Limiter.acquire``'s."""
        booked = _booked.get()
        if not booked:
            return await self.limiter.acquire()
        leave_at, wait = booked
        booked.clear()
        remaining = leave_at - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)
        return wait

    async def _request(self, commands: dict[str, Command], method: str, halt: bool) -> Answered:
        if len(commands) > 1:
            batch = await self.client.batch(commands, halt=halt)
            await self._observe(method, batch.time)
            return Answered(batch.results, batch.errors)
        name, command = next(iter(commands.items()))
        single = await self.client.call(command.method, command.params)
        await self._observe(method, single.time)
        return Answered({name: single.result}, {})

    async def _observe(self, method: str, info: TimeInfo | None) -> None:
        """Feed ``time.operating`` to the method pauses: they stop a method before its budget is spent.

        Bookkeeping: the portal has answered, so a Redis failure here must not turn that answer into a failure
        (the next answer brings the figure again)."""
        if info is not None and info.operating is not None:
            try:
                await self.pauses.observe(method, info.operating, info.operating_reset_at)
            except StoreError as exc:
                self.log.warning(
                    "could not record the method's operating time", method=method, error=str(exc)
                )
