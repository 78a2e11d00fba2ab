"""Delivers one batch of units to Bitrix24 and settles how each ended.

Steps for a batch (each unit is one key; the per-key turn guarantees no other live unit of that key):
look the keys up, with the keys their references name (one query) -> plan each unit (pure; an unresolved
reference dead-letters it) -> lease creates -> reconcile creates that may already exist (one ``list``
batch, ``reconcile``) -> one ``batch`` call through the shared limiter (or a plain call for one command)
-> the follow-ups of written entities, product rows and pipeline moves, in one more (``followups``) ->
classify each command; a failure of the whole request is shown to the portal gate, which says
whether it is the portal's (held, nothing spent) or the operation's own -> judge each failure (pure) ->
then, in ``finish``, write mapping rows and settle atomically in Redis.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from .bitrix.client import BitrixClient
from .bitrix.methods import Command
from .config import Settings
from .dependencies import unresolved_results
from .errors import StoreError
from .events import WorkerEvents
from .followups import Followups, Written, already_written, lone_chain, write_result
from .gate import PortalGate, PortalView, own_failure
from .gathering import Batch
from .judge import Circumstances, judge_failure
from .mapping import MappingStore
from .outcomes import Outcome, Result, mapping_row, settlement
from .plan import Call, Plan, command_for, plan_unit
from .policy import RetryPolicy
from .reasons import Reason
from .reconcile import reconcile
from .redis.leases import Leases
from .redis.limits import Limiter, MethodPauses
from .redis.streams import OperationQueue
from .refs import targets_of
from .reporting import report_settled
from .retrying import until_written
from .screening import Screened, Screening, carry_screening
from .sending import NOT_RUN, Answered, Failed, Sender
from .taxonomy import ErrorClass
from .units import WorkUnit
from .values import Clock, ms


@dataclass(slots=True)
class Pending:
    unit: WorkUnit
    plan: Plan
    command: Command | None = None
    screened: Screened = field(default_factory=dict)  # Result fields screening set (detail, refused)


@dataclass(slots=True)
class Delivered:
    """The results of one batch, not yet written; ``finish`` writes them and releases the create leases."""

    results: list[Result]
    token: int
    leased: list[str] = field(default_factory=list)


class Delivery:
    """Everything one worker process needs to deliver batches; holds no per-batch state."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: BitrixClient,
        queue: OperationQueue,
        store: MappingStore,
        limiter: Limiter,
        pauses: MethodPauses,
        leases: Leases,
        events: WorkerEvents,
        gate: PortalGate,
        screening: Screening,
        rng: random.Random | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.store = store
        self.pauses = pauses
        self.leases = leases
        self.events = events
        self.gate, self.screening = gate, screening
        self.clock = clock
        self.vouched = True  # the store can say "never created" (``vouching``); set at start
        self.fence_written = 0  # the highest fencing token this process wrote to it
        self.policy = RetryPolicy.from_settings(settings)
        self.rng = rng or random.Random()
        self.sender = Sender(
            client, limiter=limiter, pauses=pauses, events=events, policy=self.policy, rng=self.rng
        )
        self.sender.paused = gate.paused_here  # a request whose slot comes after a pause is not sent
        self.log = structlog.get_logger("bitrix_worker.delivery")
        self.followups = Followups(self.sender, gate, self._failure)

    async def deliver(self, units: Sequence[WorkUnit], batch: Batch | None = None) -> Delivered:
        """Plan, lease, reconcile and send; the create leases stay held until ``finish``."""
        claimed = self.queue.claimed_token([i for u in units for i in u.stream_ids])
        delivered = Delivered([], await self.leases.adopt(claimed))
        keys = [(u.head.entity.value, u.head.key) for u in units]
        mappings = await self.store.get_many(keys + targets_of(units))
        pending: list[Pending] = []
        unresolved = []
        for u, key in zip(units, keys, strict=True):
            plan = plan_unit(
                u,
                mappings.get(key),
                originator_id=self.settings.originator_id,
                recreate_deleted=self.settings.recreate_deleted,
                vouched=self.vouched,
                known=mappings,
            )
            if plan.call is not None or plan.followups_only:
                pending.append(Pending(u, plan))
            elif plan.unresolved is not None:
                unresolved.append((u, plan))
            elif plan.skip is not None:
                delivered.results.append(Result(u, Outcome.SKIPPED, plan.skip, stale=plan.stale))
            elif plan.dead is not None:
                delivered.results.append(Result(u, Outcome.DEAD, plan.dead, stale=plan.stale))
            else:
                reason = plan.done or Reason.NOTHING_TO_DELETE
                delivered.results.append(Result(u, Outcome.APPLIED, reason, stale=plan.stale))
        delivered.results += await unresolved_results(unresolved, self.queue.client, self.settings.keys.dead)
        pending = await self.screening.screen(pending, delivered.results)  # field validation, 0 calls
        if batch is not None:  # units beyond one full request go back to the gathering, nothing sent
            pending = pending[: batch.keep([(p.plan.call is not None, p.unit.stream_ids) for p in pending])]
        screened = {id(p.unit): p.screened for p in pending if p.screened}
        creates = [p.unit.ident for p in pending if p.plan.call is Call.CREATE]
        busy = await self.leases.acquire(creates, delivered.token)
        delivered.leased = [i for i in creates if i not in busy]
        try:
            pending = self._wait_for(pending, busy, Reason.LEASE_BUSY, delivered.results)
            pending = await self._reconcile(pending, delivered.results)
            pending = await self._confirm_leases(pending, delivered)
            delivered.results += await self._send(pending)
            carry_screening(screened, delivered.results)
        except BaseException:
            await self.leases.release(delivered.leased, delivered.token)
            raise
        return delivered

    async def finish(self, delivered: Delivered, results: Sequence[Result]) -> None:
        """Write the mapping rows and settle ``results`` atomically; then release the batch's leases.

        What the portal answered is kept: a store that fails here is retried until it answers (a Redis
        restart costs seconds), never treated as a failed batch whose calls would be sent again.
        """
        try:
            rows = [row for r in results if (row := mapping_row(r, delivered.token)) is not None]
            if rows:
                await until_written("mapping rows", lambda: self.store.record_many(rows), self.log)
                self.fence_written = max(self.fence_written, delivered.token)
            now = ms(self.clock)
            settlements = [settlement(r, now) for r in results]
            also = (self.pauses.key, self.pauses.take_unwritten())  # the answers' operating times
            settled = await until_written(
                "settlement", lambda: self.queue.settle(settlements, also=also), self.log
            )
            successes = self.settings.log_successes
            report_settled(results, settled, now, events=self.events, log=self.log, successes=successes)
        finally:
            try:
                await self.leases.release(delivered.leased, delivered.token)
            except StoreError as exc:  # bookkeeping: an unreleased lease lapses by itself
                self.log.warning("could not release create leases; they will lapse", error=str(exc))

    async def run(self, units: Sequence[WorkUnit], batch: Batch | None = None) -> list[Result]:
        delivered = await self.deliver(units, batch)
        await self.finish(delivered, delivered.results)
        return delivered.results

    async def _confirm_leases(self, pending: list[Pending], delivered: Delivered) -> list[Pending]:
        """Right before sending, renew the create leases; a create whose lease lapsed is not sent.

        The lease was taken before the lookup; a worker that stalled since then (GC pause, frozen VM) may have
        had its entry reclaimed and its key created by a successor. Renewing here also covers the call itself.
        """
        creates = [p.unit.ident for p in pending if p.plan.call is Call.CREATE]
        lost = await self.leases.confirm(creates, delivered.token)
        if not lost:
            return pending
        self.log.warning("create lease lost before sending; not sending", idents=sorted(lost))
        wait = dict.fromkeys(lost, int(self.policy.backoff_base_s * 1000))
        return self._wait_for(pending, wait, Reason.LEASE_LOST, delivered.results)

    @staticmethod
    def _wait_for(
        pending: list[Pending], busy: dict[str, int], reason: Reason, out: list[Result]
    ) -> list[Pending]:
        """Units whose key is busy (ms until free) retry later instead of being sent."""
        out += [
            Result(p.unit, Outcome.RETRY, reason, delay_s=busy[p.unit.ident] / 1000)
            for p in pending
            if p.unit.ident in busy
        ]
        return [p for p in pending if p.unit.ident not in busy]

    async def _reconcile(self, pending: list[Pending], out: list[Result]) -> list[Pending]:
        return await reconcile(pending, out, sender=self.sender, gate=self.gate, judge=self._failure,
                               originator=self.settings.originator_id, log=self.log)  # fmt: skip

    async def _send(self, pending: list[Pending]) -> list[Result]:
        if not pending:
            return []
        for p in pending:
            p.command = command_for(p.plan, p.unit.head.entity.spec) if p.plan.call else None
        methods = sorted({p.command.method for p in pending if p.command is not None})
        paused = await self.sender.paused_for(methods)  # books the request's slot in the same round trip
        results: list[Result] = []
        if paused:
            waits = {p.unit.ident: int(paused[p.command.method] * 1000) for p in pending
                     if p.command is not None and p.command.method in paused}  # fmt: skip
            pending = self._wait_for(pending, waits, Reason.METHOD_PAUSED, results)
        if not pending:
            return results
        commands = {f"c{i}": p.command for i, p in enumerate(pending) if p.command is not None}
        chain = lone_chain(pending[0].unit, pending[0].plan, commands) if len(pending) == 1 else None
        answer, view = await self._request(chain or commands, pending, halt=chain is not None)
        written = [already_written(p.unit, p.plan) for p in pending if p.command is None]
        for i, p in enumerate(pending):
            name = f"c{i}"
            if answer is None or view is None or p.command is None:
                continue  # follow-ups only: the entity is there
            if isinstance(answer, Answered) and name in answer.results:
                p.unit.bounces += answer.refusals
                r = write_result(p.unit, p.plan, answer.results[name])
                if p.plan.has_followups or p.plan.category is not None:
                    written.append(Written(p.unit, p.plan, r, answer if chain else None, view))
                else:
                    results.append(r)
            else:
                results.append(
                    await self._failure(p.unit, p.plan, answer, name, method=commands[name].method, view=view)
                )
        return results + await self.followups.run(written)

    async def _request(
        self, commands: dict[str, Command], pending: list[Pending], *, halt: bool
    ) -> tuple[Answered | Failed | None, PortalView | None]:
        """Phase 1: every unit's own command in one request (none when all are follow-ups only)."""
        if not commands:
            return None, None
        answer = await self.sender.send(
            commands, halt=halt, refused_before=max(p.unit.bounces for p in pending)
        )
        return answer, await self.gate.assess(answer, [p.unit for p in pending])

    async def _failure(
        self,
        unit: WorkUnit,
        plan: Plan,
        answer: Answered | Failed,
        name: str,
        *,
        method: str,
        view: PortalView,
    ) -> Result:
        """The I/O around ``judge_failure``: which classification applies, and the method pause it implies."""
        unit.bounces += answer.refusals
        sent_s: float | None = None
        if isinstance(answer, Failed):
            c, method, sent_s = answer.classification, answer.method, answer.elapsed_s
        else:
            c = answer.errors.get(name, NOT_RUN)
        reset_in = None
        if c.error_class is ErrorClass.METHOD_LIMITED:
            reset_at = await self.pauses.reset_at(method)
            reset_in = reset_at - self.clock() if reset_at else None
            await self.pauses.pause(method, self.clock() + (reset_in or self.policy.method_limit_min_s))
        how = Circumstances(
            at_ms=ms(self.clock),
            method_reset_in_s=reset_in,
            sent_s=sent_s,
            portal_request_timeout_s=self.settings.portal_request_timeout_s,
            secrets=self.sender.client.auth.secrets(),  # the webhook's secret or the OAuth access token
            whole_request=view.failure is not None,
            portal_fault=view.failure is not None and not own_failure(unit.history, view.ok_at_ms),
        )
        r = judge_failure(unit, plan, c, method, policy=self.policy, rng=self.rng, how=how)
        if r.outcome is Outcome.RETRY and r.reason is not Reason.RECREATING:
            self.events.retry(c.error_class, r.delay_s)
        return r
