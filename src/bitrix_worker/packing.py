"""Phase-2 requests of batches delivered at the same time share one request.

Every batch sends its follow-ups (product rows, pipeline moves) in a request of its own after its entity
writes (``followups``). When contacts and the deals that refer to them mix in a claim (a deal waits for its
contact, so the two never travel together), a batch's phase 2 carries half as many commands as its phase 1,
and at a portal's 2 requests/s half-empty requests are what limits orders per second.

Here a phase-2 request waits for its slot at the limiter like any other, but when the slot comes it takes
along every phase-2 part that other batches of this process queued meanwhile, up to 50 commands. Nothing
waits longer than it would have: a part joins a request that was going to be sent anyway. The commands
are independent and carry literal ids only (never a reference to another command), so which request a
part travels in changes nothing about what it does. Each part gets the same answer and the same view of
the gate (assessed once per request, with every unit in it).

No I/O library here: the request is sent by ``Sender`` and assessed by the gate, both passed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from .bitrix.marking import BeforeSend, pending_steps, run_steps
from .bitrix.methods import MAX_BATCH_COMMANDS, Command
from .gate import PortalView
from .sending import Answered, Failed, Sender
from .units import WorkUnit

Assess = Callable[[Answered | Failed, Sequence[WorkUnit]], Awaitable[PortalView]]


@dataclass(eq=False, slots=True)
class Part:
    """One batch's phase-2 commands (names unique within the process) and the units they belong to."""

    commands: dict[str, Command]
    units: list[WorkUnit]
    refused_before: int = 0
    # its batch's "about to send" mark (bitrix/marking), captured in the batch's own task: whichever task
    # sends the request runs it right before, so the delivery is counted as sent
    steps: list[BeforeSend] | None = field(default_factory=pending_steps)
    answer: tuple[Answered | Failed, PortalView] | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class Packer:
    """Per worker process: phase-2 parts waiting for a request, and the one request being sent."""

    sender: Sender
    assess: Assess
    limit: int = MAX_BATCH_COMMANDS
    _waiting: list[Part] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, part: Part) -> tuple[Answered | Failed, PortalView]:
        """The answer of the request ``part`` travelled in, and the gate's view of it."""
        self._waiting.append(part)
        try:
            while part.answer is None and part.error is None:
                async with self._lock:
                    if part.answer is None and part.error is None:
                        await self._lead()
        finally:
            if part in self._waiting:
                self._waiting.remove(part)
        if part.error is not None:
            raise part.error
        assert part.answer is not None
        return part.answer

    async def _lead(self) -> None:
        """Send one request with whatever waits when the limiter grants its slot."""
        taken: list[Part] = []

        async def more() -> dict[str, Command]:
            size = sum(len(p.commands) for p in taken)
            added: dict[str, Command] = {}
            for p in list(self._waiting):
                if taken and size + len(p.commands) > self.limit:
                    break
                self._waiting.remove(p)
                taken.append(p)
                size += len(p.commands)
                added.update(p.commands)
                await run_steps(p.steps)
            return added

        try:
            refused = max((p.refused_before for p in self._waiting), default=0)
            answer = await self.sender.send({}, refused_before=refused, more=more)
            view = await self.assess(answer, [u for p in taken for u in p.units])
        except BaseException as exc:
            for p in taken:
                p.error = exc
            raise
        for p in taken:
            p.answer = (answer, view)
