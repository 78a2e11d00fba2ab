"""Delivers one batch of units to Bitrix24 and records how each ended.

Steps for a batch (each unit is one key; the per-key turn guarantees no other live unit of that key):
look the keys up (one query) -> plan each unit (pure) -> lease creates -> reconcile creates that may already
exist (one ``list`` batch) -> wait for the shared limiter -> one ``batch`` call (or a plain call for one
command) -> classify each command -> decide (pure policy) -> write mapping rows -> settle atomically in Redis.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from .bitrix.client import BitrixClient
from .bitrix.methods import Command, crm_add, crm_delete, crm_list, crm_update
from .config import Settings
from .events import WorkerEvents
from .leases import Leases
from .limits import Breaker, Limiter, MethodPauses
from .mapping import MappingStore
from .operations import OpKind
from .outcomes import Outcome, Result, mapping_row, settlement
from .plan import Call, Plan, plan_unit
from .policy import Action, RetryPolicy, decide
from .redis.streams import OperationQueue
from .reporting import report
from .sending import Failed, Sender
from .taxonomy import Classification, ErrorClass, Execution
from .units import WorkUnit, now_ms

_CALL_OP = {Call.CREATE: OpKind.CREATE, Call.UPDATE: OpKind.UPDATE, Call.DELETE: OpKind.DELETE}
# successful call -> (reason, what to record in the mapping store)
_SUCCESS: dict[Call, tuple[str, Literal["active", "deleted"]]] = {
    Call.CREATE: ("created", "active"),
    Call.UPDATE: ("updated", "active"),
    Call.DELETE: ("deleted", "deleted"),
}
# decision -> (outcome, fixed reason or "" for the decision's own, what to record in the mapping store)
_DECISION_OUTCOME: dict[Action, tuple[Outcome, str, Literal["active", "deleted"] | None]] = {
    Action.RETRY: (Outcome.RETRY, "", None),
    Action.SKIP: (Outcome.SKIPPED, "deleted_in_bitrix24", "deleted"),
    Action.DONE: (Outcome.APPLIED, "", "deleted"),
    Action.RECREATE: (Outcome.RETRY, "", "deleted"),
    Action.DEAD_LETTER: (Outcome.DEAD, "", None),
}


@dataclass(slots=True)
class Pending:
    unit: WorkUnit
    plan: Plan
    command: Command | None = None


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
        breaker: Breaker,
        leases: Leases,
        events: WorkerEvents,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.store = store
        self.pauses = pauses
        self.breaker = breaker
        self.leases = leases
        self.events = events
        self.policy = RetryPolicy.from_settings(settings)
        self.rng = rng or random.Random()
        self.secrets = (settings.webhook.secret,)
        self.sender = Sender(
            client,
            limiter=limiter,
            pauses=pauses,
            events=events,
            policy=self.policy,
            max_refusals=settings.retries_rate_limited,
            rng=self.rng,
        )
        self.log = structlog.get_logger("bitrix_worker.delivery")

    # ---- the batch --------------------------------------------------------------------------------------

    async def process(self, units: Sequence[WorkUnit], *, probing: bool = False) -> list[Result]:
        probe: Result | None = None
        token = await self.leases.token()
        keys = [(u.head.entity.value, u.head.key) for u in units]
        mappings = await self.store.get_many(keys)
        results: list[Result] = []
        pending: list[Pending] = []
        for u, key in zip(units, keys, strict=True):
            plan = plan_unit(
                u,
                mappings.get(key),
                originator_id=self.settings.originator_id,
                recreate_deleted=self.settings.recreate_deleted,
            )
            if plan.call is None:
                results.append(self._no_call(u, plan))
            else:
                pending.append(Pending(u, plan))
        leased = [p.unit.ident for p in pending if p.plan.call is Call.CREATE]
        busy = await self.leases.acquire(leased, token)
        pending, deferred = self._split_busy(pending, busy)
        results += deferred
        try:
            pending, adopted = await self._reconcile(pending)
            results += adopted
            pending, lost = await self._confirm_leases(pending, token)
            results += lost
            results += await self._send(pending)
            probe = await self._open_breaker_if_needed(results, probing=probing)
            if probe is not None:
                results.remove(probe)
            await self._finish(results, token)
        finally:
            await self.leases.release([i for i in leased if i not in busy], token)
        if probe is not None:
            results += await self._probe(probe.unit)
        return results

    async def _open_breaker_if_needed(self, results: list[Result], *, probing: bool) -> Result | None:
        """Trip the breaker once per batch; keep the first auth failure back to serve as the first probe.

        The probe is a real operation: if the portal still refuses it, it has spent its budget and is
        dead-lettered (2 calls), and later probes are read-only calls that spend no operation.
        """
        tripping = [r for r in results if r.trip or r.pause_s]
        if not tripping:
            return None
        pause = max((r.pause_s for r in tripping), default=0.0)
        first = tripping[0]
        probe = None
        if not probing and first.trip and first.outcome is Outcome.RETRY:
            probe = first
        c = first.classification
        reason = (
            f"{c.error_class.value}: {c.bitrix_code or c.http_status or ''} {c.description}".strip()
            if c
            else ""
        )
        opened, _ = await self.breaker.trip(
            reason, cooldown_s=pause or None, probe_owner=self.settings.consumer if probe else ""
        )
        if not opened:
            # A batch that was in flight when the portal started refusing: the running cool-down covers it,
            # and the worker that opened the breaker holds the probe.
            return None
        self.events.breaker(True, reason)
        self.log.error("circuit breaker opened: consumption paused for the portal", reason=reason)
        return probe

    async def _probe(self, unit: WorkUnit) -> list[Result]:
        """Wait for the cool-down, then send the held-back operation again as the breaker's probe."""
        while True:
            state = await self.breaker.state()
            wait = state.until - time.time()
            if not state.open or (
                wait <= 0 and await self.breaker.acquire_probe(self.settings.read_timeout_s + 5)
            ):
                break
            await asyncio.sleep(min(max(wait, 0.05), 1.0))
        results = await self.process([unit], probing=True)
        if not any(r.trip for r in results):
            await self.breaker.close()
            self.events.breaker(False, "probe succeeded")
            self.log.info("circuit breaker closed: probe succeeded", ident=unit.ident)
        else:
            await self.breaker.release_probe()
        return results

    def _no_call(self, u: WorkUnit, plan: Plan) -> Result:
        if plan.skip is not None:
            return Result(u, Outcome.SKIPPED, plan.skip.value, stale=plan.stale)
        return Result(u, Outcome.APPLIED, plan.done_reason, stale=plan.stale)

    def _split_busy(self, pending: list[Pending], busy: dict[str, int]) -> tuple[list[Pending], list[Result]]:
        if not busy:
            return pending, []
        keep = [p for p in pending if p.unit.ident not in busy]
        waits = [
            Result(p.unit, Outcome.RETRY, "lease held by another worker", delay_s=busy[p.unit.ident] / 1000)
            for p in pending
            if p.unit.ident in busy
        ]
        return keep, waits

    async def _confirm_leases(self, pending: list[Pending], token: int) -> tuple[list[Pending], list[Result]]:
        """Right before sending, renew the create leases; a create whose lease lapsed is not sent.

        The lease was taken before the lookup; a worker that stalled since then (GC pause, frozen VM) may have
        had its entry reclaimed and its key created by a successor. Renewing here also covers the call itself.
        """
        creates = [p.unit.ident for p in pending if p.plan.call is Call.CREATE]
        lost = await self.leases.confirm(creates, token)
        if not lost:
            return pending, []
        self.log.warning("create lease lost before sending; not sending", idents=sorted(lost))
        waits = [
            Result(p.unit, Outcome.RETRY, "lease lost before sending", delay_s=self.policy.backoff_base_s)
            for p in pending
            if p.unit.ident in lost
        ]
        return [p for p in pending if p.unit.ident not in lost], waits

    # ---- reconciliation: a create that may already have happened --------------------------------------

    async def _reconcile(self, pending: list[Pending]) -> tuple[list[Pending], list[Result]]:
        need = [p for p in pending if p.plan.reconcile]
        if not need:
            return pending, []
        commands = {
            f"r{i}": crm_list(
                p.unit.head.entity.value,
                filter={"=ORIGINATOR_ID": self.settings.originator_id, "=ORIGIN_ID": p.unit.head.key},
                select=["ID"],
                order={"ID": "ASC"},
            )
            for i, p in enumerate(need)
        }
        found: dict[int, int] = {}
        failed: dict[int, tuple[Classification, str]] = {}
        outcome = await self.sender.send(commands)
        if isinstance(outcome, Failed):
            failed = dict.fromkeys(range(len(need)), (outcome.classification, outcome.method))
        else:
            for i in range(len(need)):
                name = f"r{i}"
                if name in outcome.errors:
                    failed[i] = (outcome.errors[name], commands[name].method)
                elif name in outcome.results:
                    items = outcome.results[name] or []
                    if items:
                        found[i] = int(items[0]["ID"])
                        if len(items) > 1:
                            self.log.warning(
                                "duplicates already in Bitrix24", ident=need[i].unit.ident, n=len(items)
                            )
                else:
                    failed[i] = (_not_run(), commands[name].method)
        results = []
        for i, p in enumerate(need):
            if i in found:
                results.append(
                    Result(
                        p.unit,
                        Outcome.APPLIED,
                        "adopted existing entity",
                        call=Call.CREATE,
                        bitrix_id=found[i],
                        mapping_state="active",
                        stale=p.plan.stale,
                    )
                )
            elif i in failed:
                c, method = failed[i]
                results.append(await self._failure(p, c, method))
        done = {id(p) for i, p in enumerate(need) if i in found or i in failed}
        return [p for p in pending if id(p) not in done], results

    # ---- the call ---------------------------------------------------------------------------------------

    def _command(self, p: Pending) -> Command:
        entity = p.unit.head.entity.value
        if p.plan.call is Call.CREATE:
            return crm_add(entity, p.plan.fields)
        assert p.plan.bitrix_id is not None
        if p.plan.call is Call.UPDATE:
            return crm_update(entity, p.plan.bitrix_id, p.plan.fields)
        return crm_delete(entity, p.plan.bitrix_id)

    async def _send(self, pending: list[Pending]) -> list[Result]:
        if not pending:
            return []
        for p in pending:
            p.command = self._command(p)
        results, pending = await self._defer_paused(pending)
        if not pending:
            return results
        commands = {f"c{i}": p.command for i, p in enumerate(pending) if p.command is not None}
        outcome = await self.sender.send(commands)
        if isinstance(outcome, Failed):
            for p in pending:
                results.append(
                    await self._failure(p, outcome.classification, outcome.method, sent_s=outcome.elapsed_s)
                )
            return results
        for i, p in enumerate(pending):
            name = f"c{i}"
            method = commands[name].method
            if name in outcome.errors:
                results.append(await self._failure(p, outcome.errors[name], method))
            elif name in outcome.results:
                results.append(self._success(p, outcome.results[name]))
            else:
                results.append(await self._failure(p, _not_run(), method))
        return results

    async def _defer_paused(self, pending: list[Pending]) -> tuple[list[Result], list[Pending]]:
        methods = sorted({p.command.method for p in pending if p.command is not None})
        paused = await self.pauses.paused_for(methods)
        if not paused:
            return [], pending
        deferred = [
            Result(p.unit, Outcome.RETRY, "method paused (operating time)", delay_s=paused[p.command.method])
            for p in pending
            if p.command is not None and p.command.method in paused
        ]
        return deferred, [p for p in pending if p.command is not None and p.command.method not in paused]

    # ---- per-unit results -------------------------------------------------------------------------------

    def _success(self, p: Pending, result: object) -> Result:
        call = p.plan.call
        assert call is not None
        reason, state = _SUCCESS[call]
        bitrix_id = _as_id(result) if call is Call.CREATE else p.plan.bitrix_id
        return Result(
            p.unit,
            Outcome.APPLIED,
            reason,
            call=call,
            bitrix_id=bitrix_id,
            mapping_state=state,
            stale=p.plan.stale,
        )

    async def _failure(
        self, p: Pending, c: Classification, method: str, *, sent_s: float | None = None
    ) -> Result:
        """Record the failed attempt, decide (pure policy), and turn the decision into a Result.

        ``sent_s``: how long ago a create request whose fate is unknown was sent. Its retry (a lookup by
        ORIGIN_ID first) waits until the portal must have finished or cut it, or the lookup could miss an
        entity that is committed a moment later.
        """
        u = p.unit
        u.record(c, method=method, secrets=self.secrets)
        if c.counts_against_budget:
            u.failures += 1
        else:
            u.bounces += 1
        reset_in = None
        if c.error_class is ErrorClass.METHOD_LIMITED:
            reset_at = await self.pauses.reset_at(method)
            reset_in = reset_at - time.time() if reset_at else None
            await self.pauses.pause(method, time.time() + (reset_in or self.policy.method_limit_min_s))
        op = _CALL_OP[p.plan.call] if p.plan.call else u.head.op
        if op is OpKind.UPDATE and u.head.op is OpKind.UPSERT:
            op = OpKind.UPSERT  # an upsert whose entity was deleted in Bitrix24 creates it again
        d = decide(
            op,
            c,
            failures=u.failures,
            bounces=u.bounces,
            policy=self.policy,
            rng=self.rng,
            method_reset_in_s=reset_in,
        )
        outcome, reason, state = _DECISION_OUTCOME[d.action]
        delay = d.delay_s
        if sent_s is not None and p.plan.call is Call.CREATE and c.error_class is ErrorClass.NETWORK:
            delay = max(delay, self.settings.portal_request_timeout_s - sent_s)
        if d.action is Action.RETRY:
            self.events.retry(c.error_class, delay)
        return Result(
            u,
            outcome,
            reason or d.reason,
            classification=c,
            call=p.plan.call,
            delay_s=delay if outcome is Outcome.RETRY else 0.0,
            mapping_state=state,
            stale=p.plan.stale,
            trip=d.open_breaker,
            pause_s=d.pause_portal_s,
        )

    # ---- writing the results ---------------------------------------------------------------------------

    async def _finish(self, results: list[Result], token: int) -> None:
        rows = [row for r in results if (row := mapping_row(r, token)) is not None]
        if rows:
            await self.store.record_many(rows)
        settled = await self.queue.settle([settlement(r) for r in results])
        now = now_ms()
        for r, ok in zip(results, settled, strict=True):
            if not ok:
                self.log.warning(
                    "unit was reclaimed by another worker; its outcome is theirs", ident=r.unit.ident
                )
                continue
            report(r, now, events=self.events, log=self.log)


def _not_run() -> Classification:
    return Classification(ErrorClass.SERVER_ERROR, Execution.NOT_EXECUTED, description="command was not run")


def _as_id(result: object) -> int:
    if isinstance(result, bool) or not isinstance(result, int | str):
        raise ValueError(f"unexpected id {result!r}")
    return int(result)
