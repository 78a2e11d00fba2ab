"""Delivers one batch of units to Bitrix24 and settles how each ended.

Steps for a batch (each unit is one key; the per-key turn guarantees no other live unit of that key):
look the keys up (one query) -> plan each unit (pure) -> lease creates -> reconcile creates that may already
exist (one ``list`` batch) -> one ``batch`` call through the shared limiter (or a plain call for one
command) -> classify each command; a failure of the whole request is shown to the portal gate, which says
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
from .bitrix.methods import Command, crm_list, parse_id
from .config import Settings
from .errors import BitrixWorkerError, StoreError
from .events import WorkerEvents
from .gate import PortalGate, PortalView, own_failure
from .judge import Circumstances, judge_failure
from .mapping import MappingStore
from .outcomes import Outcome, Result, mapping_row, settlement
from .plan import Call, Plan, adopt_and_update, command_for, plan_unit
from .policy import RetryPolicy
from .reasons import Reason
from .redis.leases import Leases
from .redis.limits import Limiter, MethodPauses
from .redis.streams import OperationQueue
from .reporting import report
from .retrying import until_written
from .screening import Screened, Screening
from .sending import NOT_RUN, Answered, Failed, Sender
from .taxonomy import ErrorClass
from .units import WorkUnit
from .values import Clock, State, ms

# successful call -> (reason, what to record in the mapping store)
_SUCCESS: dict[Call, tuple[Reason, State]] = {
    Call.CREATE: (Reason.CREATED, "active"),
    Call.UPDATE: (Reason.UPDATED, "active"),
    Call.DELETE: (Reason.DELETED, "deleted"),
}


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
        self.log = structlog.get_logger("bitrix_worker.delivery")

    async def deliver(self, units: Sequence[WorkUnit]) -> Delivered:
        """Plan, lease, reconcile and send; the create leases stay held until ``finish``."""
        delivered = Delivered([], await self.leases.token())
        keys = [(u.head.entity.value, u.head.key) for u in units]
        mappings = await self.store.get_many(keys)
        pending: list[Pending] = []
        for u, key in zip(units, keys, strict=True):
            plan = plan_unit(
                u,
                mappings.get(key),
                originator_id=self.settings.originator_id,
                recreate_deleted=self.settings.recreate_deleted,
                vouched=self.vouched,
            )
            if plan.call is not None:
                pending.append(Pending(u, plan))
            elif plan.skip is not None:
                delivered.results.append(Result(u, Outcome.SKIPPED, plan.skip, stale=plan.stale))
            elif plan.dead is not None:
                delivered.results.append(Result(u, Outcome.DEAD, plan.dead, stale=plan.stale))
            else:
                reason = plan.done or Reason.NOTHING_TO_DELETE
                delivered.results.append(Result(u, Outcome.APPLIED, reason, stale=plan.stale))
        pending = await self.screening.screen(pending, delivered.results)  # field validation, 0 calls
        creates = [p.unit.ident for p in pending if p.plan.call is Call.CREATE]
        busy = await self.leases.acquire(creates, delivered.token)
        delivered.leased = [i for i in creates if i not in busy]
        try:
            pending = self._wait_for(pending, busy, Reason.LEASE_BUSY, delivered.results)
            pending = await self._reconcile(pending, delivered.results)
            pending = await self._confirm_leases(pending, delivered)
            delivered.results += await self._send(pending)
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
            settled = await until_written("settlement", lambda: self.queue.settle(settlements), self.log)
            for r, ok in zip(results, settled, strict=True):
                if ok:
                    report(r, now, events=self.events, log=self.log, successes=self.settings.log_successes)
                else:
                    self.log.warning(
                        "unit was reclaimed by another worker; its outcome is theirs", ident=r.unit.ident
                    )
        finally:
            try:
                await self.leases.release(delivered.leased, delivered.token)
            except StoreError as exc:  # bookkeeping: an unreleased lease lapses by itself
                self.log.warning("could not release create leases; they will lapse", error=str(exc))

    async def run(self, units: Sequence[WorkUnit]) -> list[Result]:
        delivered = await self.deliver(units)
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
        """Look up, by ORIGINATOR_ID + ORIGIN_ID, the creates that may already have happened (one request)."""
        need = [p for p in pending if p.plan.reconcile]
        if not need:
            return pending
        commands = {
            f"r{i}": crm_list(
                p.unit.head.entity.value,
                filter={"=ORIGINATOR_ID": self.settings.originator_id, "=ORIGIN_ID": p.unit.head.key},
                select=["ID"],
                order={"ID": "ASC"},
            )
            for i, p in enumerate(need)
        }
        answer = await self.sender.send(commands, refused_before=max(p.unit.bounces for p in need))
        view = await self.gate.assess(answer, [p.unit for p in need])
        for i, p in enumerate(need):
            name = f"r{i}"
            found = answer.results.get(name) if isinstance(answer, Answered) else None
            if found:
                if len(found) > 1:
                    self.log.warning("duplicates already in Bitrix24", ident=p.unit.ident, n=len(found))
                if p.unit.ambiguous_before:  # its own earlier attempt made it, with these very fields
                    adopted = Result(p.unit, Outcome.APPLIED, Reason.ADOPTED, call=Call.CREATE,
                                     stale=p.plan.stale, refused=p.screened.get("refused", {}))  # fmt: skip
                    adopted.bitrix_id, adopted.mapping_state = int(found[0]["ID"]), "active"
                    out.append(adopted)
                else:  # made by someone else's create of this key: this operation's fields still apply
                    p.plan = adopt_and_update(p.plan, int(found[0]["ID"]))
            elif isinstance(answer, Answered) and name in answer.results:
                continue  # not there: create it
            else:
                out.append(await self._failure(p, answer, name, commands[name].method, view))
        settled = {id(r.unit) for r in out}
        return [p for p in pending if id(p.unit) not in settled]

    async def _send(self, pending: list[Pending]) -> list[Result]:
        if not pending:
            return []
        for p in pending:
            p.command = command_for(p.plan, p.unit.head.entity.value)
        methods = sorted({p.command.method for p in pending if p.command is not None})
        paused = await self.pauses.paused_for(methods)
        results: list[Result] = []
        if paused:
            waits = {p.unit.ident: int(paused[p.command.method] * 1000) for p in pending
                     if p.command is not None and p.command.method in paused}  # fmt: skip
            pending = self._wait_for(pending, waits, Reason.METHOD_PAUSED, results)
        if not pending:
            return results
        commands = {f"c{i}": p.command for i, p in enumerate(pending) if p.command is not None}
        answer = await self.sender.send(commands, refused_before=max(p.unit.bounces for p in pending))
        view = await self.gate.assess(answer, [p.unit for p in pending])
        for i, p in enumerate(pending):
            name = f"c{i}"
            if isinstance(answer, Answered) and name in answer.results:
                p.unit.bounces += answer.refusals
                results.append(self._success(p, answer.results[name]))
            else:
                results.append(await self._failure(p, answer, name, commands[name].method, view))
        return results

    def _success(self, p: Pending, result: object) -> Result:
        call = p.plan.call
        if call is None:
            raise BitrixWorkerError(f"{p.unit.ident}: a success without a call")
        reason, state = _SUCCESS[call]
        bitrix_id = parse_id(result) if call is Call.CREATE else p.plan.bitrix_id
        return Result(
            p.unit, Outcome.APPLIED, reason, call=call, bitrix_id=bitrix_id, mapping_state=state,
            stale=p.plan.stale, **p.screened,
        )  # fmt: skip

    async def _failure(
        self, p: Pending, answer: Answered | Failed, name: str, method: str, view: PortalView
    ) -> Result:
        """The I/O around ``judge_failure``: which classification applies, and the method pause it implies."""
        p.unit.bounces += answer.refusals
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
            secrets=(self.settings.webhook.secret,),
            whole_request=view.failure is not None,
            portal_fault=view.failure is not None and not own_failure(p.unit.history, view.ok_at_ms),
        )
        r = judge_failure(p.unit, p.plan, c, method, policy=self.policy, rng=self.rng, how=how)
        if r.outcome is Outcome.RETRY and r.reason is not Reason.RECREATING:
            self.events.retry(c.error_class, r.delay_s)
        return r
