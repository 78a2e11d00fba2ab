"""Screening: each planned create or update is checked against the portal's field schema before sending.

Bitrix24 answers "success" for fields it then throws away, so a sync that trusts the answer loses data
silently. Delivery calls ``Screening.screen`` right after planning (the plan says create or update, which
decides the rules: required fields on create, immutable ones on update; an upsert is screened as what it
resolved to). Per finding kind the configured action applies (``validation.decide``):

- ``reject``: the unit is dead-lettered as ``invalid_data`` with the field, the value and what was expected,
  after 0 calls;
- ``warn``: it is sent as it is; the finding is logged and counted;
- ``drop``: it is sent without the field; the outcome record says which fields were dropped.

Every entity is screened: deals, contacts, companies and leads against ``crm.<entity>.fields``; quotes,
smart invoices and smart processes (``item:<entityTypeId>``, written with ``crm.item.*``) against
``crm.item.fields``, with the fields as they are sent (camelCase) and findings named in the producer's
own spelling (``spelling.respell``).

The schema comes from the shared cache (``redis.schemas.SchemaCache``), fetched through the shared limiter
on a miss. Early refresh, at most once per ``schema_refresh_min_s`` per entity (the cached copy's age is
the fleet-wide rate limit): when a finding a newer schema could clear would stop or change an operation (an
unknown field, a value of no list: a field or list item added on the portal since), and when the portal
itself refused the unit's previous attempt as invalid data.

A schema that cannot be fetched (no cached copy) never dead-letters anything. While the failure may pass
(network, 5xx, limits, auth: the send would most likely fail the same way) the unit is held and tried
again, nothing spent, for up to ``HOLD_MAX_S``; a permanent failure (the portal refuses the schema methods)
or a longer one lets units go out unvalidated, as before validation existed, logged and counted
(docs/fields.md says why).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import structlog

from .bitrix.client import BitrixClient
from .bitrix.schemas import fetch_schema
from .config import Settings
from .crm import SYSTEM, EntitySpec
from .defaults import DESCRIPTION_MAX_CHARS
from .errors import BitrixError, PermanentBitrixError
from .events import WorkerEvents
from .gate import PortalGate, portal_suspect
from .outcomes import Outcome, Refusal, Result
from .plan import Call, Plan, without_members
from .portal import Portal
from .reasons import Reason
from .records import ATTEMPT
from .redaction import redact
from .redis.connection import RedisClient
from .redis.schemas import SchemaCache
from .schema import EntitySchema
from .spelling import respell, sent_name
from .taxonomy import Classification, ErrorClass, Execution
from .units import WorkUnit
from .validation import (
    CLEAN,
    SCHEMA_UNAVAILABLE,
    Decision,
    Finding,
    FindingAction,
    FindingKind,
    decide,
    validate,
)
from .values import Clock

SCREENED_ENTITIES = frozenset(SYSTEM)  # the entities named by a word; every ``item:<entityTypeId>`` too
SURPRISES = frozenset({FindingKind.UNKNOWN_FIELD, FindingKind.NOT_IN_LIST})  # a newer schema may clear them
FETCH_BACKOFF_S = 1.0  # a failed schema fetch is tried again (by this process) after this
HOLD_MAX_S = 600.0  # how long units are held for a schema that keeps failing transiently
MIN_HOLD_S = 0.5
SHOWN_FINDINGS = 3

Fetch = Callable[[str], Awaitable[EntitySchema]]
Screened = dict[str, Any]  # keyword arguments for the Result of a unit screening let through


@dataclass(frozen=True, slots=True)
class Failing:
    since: float
    retry_at: float
    transient: bool


@dataclass(frozen=True, slots=True)
class Unavailable:
    hold_s: float  # > 0: hold the unit this long (nothing spent); 0: send it unvalidated


class Planned(Protocol):
    """A planned unit as delivery holds it (``delivery.Pending``)."""

    unit: WorkUnit
    plan: Plan
    screened: Screened  # Result fields for the unit's success: ``detail``, ``refused``


def own_fields(spec: EntitySpec, call: Call, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields the producer is answerable for: a create's origin fields are the worker's own (an
    update's are all its own: the same dict, not a copy)."""
    if call is Call.UPDATE:
        return fields
    return {k: v for k, v in fields.items() if k not in spec.origin_fields}


def producer_names(unit: WorkUnit, live: Sequence[int] | None = None) -> list[str]:
    """Every field name the unit's (live) members wrote, in their own spelling, in order."""
    members = unit.members if live is None else [unit.members[i] for i in live]
    return [name for m in members for name in m.operation.fields]


P = TypeVar("P", bound=Planned)


def portal_refused(unit: WorkUnit) -> bool:
    """Its last attempt was refused by the portal as invalid data: maybe the schema changed since."""
    last = unit.history[-1] if unit.history else None
    return last is not None and last.get("kind") == ATTEMPT and last.get("class") == ErrorClass.INVALID_DATA


def refusal(findings: Sequence[Finding], secrets: tuple[str, ...]) -> Refusal:
    """What a refusal records: the text (outcome record, counters) names kind, field and expectation but
    never the value (producer data, unbounded); the classification's description (the dead letter) adds
    the values."""
    first = findings[0]
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    text = redact(f"invalid data: {first.kind.value} {first.field}: expected {first.expected}{more}", secrets)
    shown = "; ".join(_described(f) for f in findings[:SHOWN_FINDINGS]) + more
    description = redact(shown, secrets)[:DESCRIPTION_MAX_CHARS]
    c = Classification(ErrorClass.INVALID_DATA, Execution.NOT_EXECUTED, description=description)
    return Refusal(text[:DESCRIPTION_MAX_CHARS], c)


def rejection(
    unit: WorkUnit,
    call: Call,
    findings: tuple[Finding, ...],
    secrets: tuple[str, ...],
    stale: tuple[int, ...] = (),
) -> Result:
    """The whole unit dead-lettered as ``invalid_data``, after 0 calls."""
    r = refusal(findings, secrets)
    return Result(unit, Outcome.DEAD, Reason.INVALID_DATA, detail=r.text, classification=r.classification,
                  call=call, stale=stale)  # fmt: skip


def culprits(unit: WorkUnit, live: Sequence[int], findings: Sequence[Finding]) -> dict[int, list[Finding]]:
    """Which live member each refused finding belongs to: the last one that sets the field (its value is
    the merged one); a field no member sets (a required one missing) is the first member's."""
    out: dict[int, list[Finding]] = {}
    for f in findings:
        setters = [i for i in live if f.field in unit.members[i].operation.fields]
        out.setdefault(setters[-1] if setters else live[0], []).append(f)
    return out


def _described(f: Finding) -> str:
    return f.message if f.value in f.message else f"{f.message} (value {f.value})"


def drop_note(call: Call, dropped: tuple[Finding, ...]) -> str:
    """What the outcome record says of an applied unit sent without some of its fields."""
    verb = {Call.CREATE: "created", Call.UPDATE: "updated"}.get(call, call.value)
    names = ", ".join(sorted({f"{f.field} ({f.kind.value})" for f in dropped}))
    return f"{verb} without dropped fields: {names}"[:DESCRIPTION_MAX_CHARS]


class Screening:
    """One per worker process; holds the cache handle and, per entity, when a failed fetch may be retried."""

    def __init__(
        self,
        settings: Settings,
        cache: SchemaCache,
        fetch: Fetch,
        *,
        events: WorkerEvents,
        gate: PortalGate | None = None,
        secrets: Callable[[], tuple[str, ...]] = tuple,
        clock: Clock = time.time,
    ) -> None:
        self.enabled = settings.validate_fields
        self.actions = settings.finding_actions()
        self.refresh_min_s = settings.schema_refresh_min_s
        self.known_secrets = secrets  # asked each time: an OAuth access token changes when refreshed
        self.cache = cache
        self.fetch = fetch
        self.events = events
        self.gate = gate
        self.clock = clock
        self.failing: dict[str, Failing] = {}  # entity -> its schema fetch failing since when
        self.fetching: dict[str, asyncio.Lock] = {}  # one load per entity at a time in this process
        self.log = structlog.get_logger("bitrix_worker.screening")

    @classmethod
    def build(
        cls,
        redis: RedisClient,
        settings: Settings,
        client: BitrixClient,
        portal: Portal,
        events: WorkerEvents,
    ) -> Screening:
        cache = SchemaCache(redis, settings.keys, portal.name, ttl_s=settings.schema_ttl_s)

        async def fetch(entity: str) -> EntitySchema:
            first = portal.take_primed(entity)  # the start check asked the deal schema's first part
            return await fetch_schema(client, entity, acquire=portal.limiter.acquire, first=first)

        return cls(settings, cache, fetch, events=events, gate=portal.gate, secrets=client.auth.secrets)

    async def screen(self, pending: list[P], out: list[Result]) -> list[P]:
        """The units to send (dropped fields removed); rejected ones are appended to ``out`` as dead."""
        if not self.enabled:
            return pending
        kept: list[P] = []
        batch: dict[str, EntitySchema] = {}  # entity -> its schema, asked once per batch (``_schema``)
        for p in pending:
            if self._clean(p, batch):
                kept.append(p)
                continue
            rejected = await self._screen_one(p, batch)
            if rejected is None:
                kept.append(p)
            else:
                out.append(rejected)
        return kept

    def check(
        self,
        spec: EntitySpec,
        call: Call,
        sent: dict[str, Any],
        schema: EntitySchema,
        unit: WorkUnit,
        *,
        live: Sequence[int] | None = None,
    ) -> Decision:
        """Validate the fields as sent; findings named as the (``live``) members of ``unit`` wrote them."""
        findings = validate(call.value, own_fields(spec, call, sent), schema)
        if not findings:
            return CLEAN
        return decide(respell(findings, spec, producer_names(unit, live)), self.actions)

    def _clean(self, p: Planned, batch: dict[str, EntitySchema]) -> bool:
        """``_screen_one`` would keep ``p`` as it is: its entity's schema already asked in this batch, no
        refresh wanted, and its fields clean. Why: most units of a batch end here, and without the two
        coroutines of ``_screen_one`` and ``_schema`` (~1 µs per unit). Anything else goes that way."""
        call, unit = p.plan.call, p.unit
        if call is not Call.UPDATE and call is not Call.CREATE:
            return False
        head = unit.head
        schema = batch.get(head.entity.value)
        if schema is None or portal_refused(unit):
            return False
        return self.check(head.entity.spec, call, p.plan.fields, schema, unit) is CLEAN

    async def _screen_one(self, p: Planned, batch: dict[str, EntitySchema] | None = None) -> Result | None:
        call, entity = p.plan.call, p.unit.head.entity.value
        if call not in (Call.CREATE, Call.UPDATE):
            return None
        batch = {} if batch is None else batch
        spec = p.unit.head.entity.spec
        schema = await self._schema(entity, batch, refresh=portal_refused(p.unit))
        if isinstance(schema, Unavailable):
            if schema.hold_s:
                return Result(p.unit, Outcome.RETRY, Reason.SCHEMA_UNAVAILABLE, delay_s=schema.hold_s)
            self.events.field_finding(SCHEMA_UNAVAILABLE, FindingAction.WARN.value, p.unit.head.entity.label)
            return None
        decision = self.check(spec, call, p.plan.fields, schema, p.unit)
        if decision is CLEAN:
            return None
        if self._surprised(decision, schema):
            fresher = await self._schema(entity, batch, refresh=True)
            if isinstance(fresher, EntitySchema) and fresher.fetched_at != schema.fetched_at:
                decision = self.check(spec, call, p.plan.fields, fresher, p.unit)
        self._report(p.unit, entity, decision)
        if decision.reject:
            kept = self._without_culprits(p, spec, call, schema, decision)
            if kept is None:
                return rejection(p.unit, call, decision.reject, self.known_secrets(), p.plan.stale)
            decision = kept
        if decision.drop:
            dropped = {sent_name(spec, f) for f in decision.drop_fields}
            p.plan = replace(p.plan, fields={k: v for k, v in p.plan.fields.items() if k not in dropped})
            p.screened["detail"] = drop_note(call, decision.drop)
        return None

    def _without_culprits(
        self, p: Planned, spec: EntitySpec, call: Call, schema: EntitySchema, decision: Decision
    ) -> Decision | None:
        """Coalesced operations are one command, but one bad operation must not take its key's other
        operations down with it: the members the refused findings belong to are refused alone (dead-lettered
        with their own reason) and the rest go ahead, merged without them. None: refuse the whole unit (every
        operation is at fault, or the create that the others would update)."""
        live = [i for i in range(len(p.unit.members)) if i not in p.plan.stale]
        blamed: dict[int, list[Finding]] = {}
        findings: Sequence[Finding] = decision.reject
        trial = p.plan
        while findings:  # each round blames at least one more member: at most len(live) rounds
            for i, found in culprits(p.unit, [i for i in live if i not in blamed], findings).items():
                blamed.setdefault(i, []).extend(found)
            if len(blamed) == len(live) or (call is Call.CREATE and live[0] in blamed):
                return None
            trial = without_members(p.plan, p.unit, set(blamed))  # merged as planning merges them
            if trial.call is None:  # what is left only sets rows or moves the pipeline: nothing to check
                decision = decide([], self.actions)
                break
            rest = [i for i in live if i not in blamed]
            decision = self.check(spec, call, trial.fields, schema, p.unit, live=rest)
            findings = decision.reject  # an earlier member's value that the blamed one had hidden
        p.plan = trial
        p.screened["refused"] = {i: refusal(found, self.known_secrets()) for i, found in blamed.items()}
        return decision

    def _surprised(self, decision: Decision, schema: EntitySchema) -> bool:
        """A finding that stops or changes the operation and that a newer schema might not have."""
        stopping = decision.reject + decision.drop
        old_enough = self.clock() - schema.fetched_at >= self.refresh_min_s
        return old_enough and any(f.kind in SURPRISES for f in stopping)

    async def _schema(
        self, entity: str, batch: dict[str, EntitySchema], *, refresh: bool
    ) -> EntitySchema | Unavailable:
        """``schema`` asked once per entity per batch: the answer is the memo's, the same for every unit of
        the batch (the CPU of asking was a tenth of screening). A refresh always asks, and what it gives
        is the batch's from then on, as it is the memo's."""
        found = None if refresh else batch.get(entity)
        if found is None:
            answer = await self.schema(entity, refresh=refresh)
            if not isinstance(answer, EntitySchema):
                return answer  # Unavailable: asked again for the next unit, as each has its own hold
            batch[entity] = found = answer
        return found

    async def schema(self, entity: str, *, refresh: bool = False) -> EntitySchema | Unavailable:
        """The schema to validate with, or what to do without one (hold the unit, or send it unchecked)."""
        lock = self.fetching.get(entity)
        if lock is None:
            lock = self.fetching[entity] = asyncio.Lock()
        async with lock:  # concurrent batches: one cold fetch
            now = self.clock()
            failing = self.failing.get(entity)
            if failing is not None and failing.retry_at > now:
                return self.without_schema(failing, now)
            try:
                schema = await self.cache.load(
                    entity,
                    lambda: self.fetch(entity),
                    refresh=refresh,
                    refresh_older_than=self.refresh_min_s if refresh else None,
                )
            except BitrixError as exc:
                if self.gate is not None and portal_suspect(exc.classification):
                    await self.gate.note_portal_failure(exc.classification)  # a down portal pauses
                failing = Failing(
                    since=failing.since if failing else now,
                    retry_at=now + FETCH_BACKOFF_S,
                    transient=not isinstance(exc, PermanentBitrixError),
                )
                self.failing[entity] = failing
                verdict = self.without_schema(failing, now)
                self.log.warning(
                    "field schema unavailable",
                    entity=entity,
                    error=redact(str(exc), self.known_secrets())[:DESCRIPTION_MAX_CHARS],
                    then="hold" if verdict.hold_s else "send unvalidated",
                    retry_in_s=FETCH_BACKOFF_S,
                )
                return verdict
            self.failing.pop(entity, None)
            return schema

    @staticmethod
    def without_schema(failing: Failing, now: float) -> Unavailable:
        """Hold while the failure may pass (the send would most likely fail the same way), up to
        ``HOLD_MAX_S``; a permanent failure, or one that lasts longer, lets units go out unchecked."""
        if failing.transient and now - failing.since < HOLD_MAX_S:
            return Unavailable(max(failing.retry_at - now, MIN_HOLD_S))
        return Unavailable(0.0)

    def _report(self, unit: WorkUnit, entity: str, decision: Decision) -> None:
        for action, findings in (
            (FindingAction.REJECT, decision.reject),
            (FindingAction.WARN, decision.warn),
            (FindingAction.DROP, decision.drop),
        ):
            for f in findings:
                self.events.field_finding(f.kind.value, action.value, unit.head.entity.label)  # bounded
        if decision.warn or decision.drop:
            self.log.warning(
                "field findings: sending anyway",
                entity=entity,
                key=unit.head.key,
                stream_id=unit.origin,
                warned=[redact(f.message, self.known_secrets()) for f in decision.warn],
                dropped=[f"{f.field} ({f.kind.value})" for f in decision.drop],
            )


def carry_screening(screened: dict[int, Screened], results: list[Result]) -> None:
    """Members screening refused stay refused whatever became of the rest of their unit; what it dropped is
    said in the outcome of a unit that was applied."""
    for r in results:
        found = screened.get(id(r.unit))
        if found is None or r.outcome is Outcome.RETRY:
            continue
        r.refused = found.get("refused", r.refused)
        if r.outcome is Outcome.APPLIED and found.get("detail"):
            r.detail = "; ".join(d for d in (r.detail, found["detail"]) if d)
