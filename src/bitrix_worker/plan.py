"""Pure: what one unit of work needs from Bitrix24, given what the mapping store knows about its key.

No I/O and no clock. The worker looks the key up once per batch, calls ``plan_unit`` and performs the plan;
the rules below are what makes a retried create never a second entity and an old update never overwrite a
newer one.

An order adds two things to a unit's one command: its product rows (the whole set, ``products``) and,
for a deal whose update changes ``CATEGORY_ID``, a pipeline move (``crm.deal.update`` drops the field
silently). Both are *follow-ups*: commands that need the entity's id and are sent after its own write
(``followups``). References by external key (``refs``) are replaced by ids here, from the mapping rows
the caller looked up; an unresolved one dead-letters the unit before any call.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingOf
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from . import calls
from .bitrix.methods import Command
from .crm import Api, EntitySpec, PipelineMove, split_pipeline_move
from .errors import BitrixWorkerError
from .operations import OpKind
from .reasons import Reason
from .refs import Ref, Unresolved, plain, substitute
from .units import WorkUnit
from .values import Mapping

Known = MappingOf[tuple[str, str], Mapping]
"""Mapping rows of the keys a unit refers to (a key absent here was never created)."""


class Call(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(slots=True)
class Plan:
    """What to do for one unit. Never changed in place (``dataclasses.replace`` makes a changed copy), yet
    not a frozen dataclass: that one's ``__init__`` sets each field through ``object.__setattr__``, and
    building every unit's plan cost three times as much CPU (~2-3 µs)."""

    call: Call | None  # None: nothing to send
    bitrix_id: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    skip: Reason | None = None  # why no call, when the goal is not reached
    dead: Reason | None = None  # why no call, when it must be dead-lettered (its key's create failed)
    done: Reason | None = None  # why no call, when the goal is already reached (delete of a missing entity)
    stale: tuple[int, ...] = ()  # member indexes skipped as stale (the rest proceed)
    reconcile: bool = False  # look the entity up by ORIGINATOR_ID + ORIGIN_ID before creating
    products: list[dict[str, Any]] | None = None  # the whole row set to set after the write (None: leave)
    move: PipelineMove | None = None  # a pipeline change the entity's own update would drop
    category: Any = None  # the pipeline an update moves the entity to (for the outcome), if any
    followups_only: bool = False  # no call of its own: only the rows / the move (``call`` is None)
    adopted: bool = False  # its own earlier create was found by the lookup: only its follow-ups are left
    unresolved: Ref | None = None  # the reference that dead-lettered it (``dead`` is REF_UNRESOLVED)
    detail: str = ""  # the reason's sentence with its particulars

    @property
    def has_followups(self) -> bool:
        return self.products is not None or self.move is not None


def _stale_members(unit: WorkUnit, stored_version: int | None) -> tuple[int, ...]:
    """Members older than the stored version or than an earlier member of the same unit.

    Coalesced members are merged in stream order, so an older version that arrived after a newer one would
    otherwise overwrite it: the newest version seen so far is the bar each member must reach.
    """
    stale = []
    newest = stored_version
    for i, m in enumerate(unit.members):
        version = m.operation.version
        if version is None:
            continue
        if newest is not None and version < newest:
            stale.append(i)
        else:
            newest = version
    return tuple(stale)


def plan_unit(
    unit: WorkUnit,
    mapping: Mapping | None,
    *,
    originator_id: str,
    recreate_deleted: bool,
    vouched: bool = True,
    known: Known | None = None,
) -> Plan:
    """``vouched``: the mapping store has seen every create of the stream, so a key it does not know was
    never created; when it cannot vouch (``vouching``), such a create looks itself up first. ``known``:
    the mapping rows of the keys the unit's references name."""
    stale = _stale_members(unit, mapping.version if mapping else None)
    live = [m for i, m in enumerate(unit.members) if i not in stale] if stale else unit.members
    if not live:
        return Plan(None, skip=Reason.STALE, stale=stale)
    head = live[0].operation
    spec = head.entity.spec
    fields = calls.fields_for(spec, head.fields)  # a copy: the plan's own
    products: list[dict[str, Any]] | None = head.products
    for m in live[1:]:
        fields.update(calls.fields_for(spec, m.operation.fields))  # TITLE then title: one field, the last
        if m.operation.products is not None:
            products = m.operation.products  # coalesced updates: the last row set wins
    state = mapping.state if mapping is not None else None
    bitrix_id = mapping.bitrix_id if mapping is not None else None
    if state == "active" and bitrix_id is not None:
        call = Call.DELETE if head.op is OpKind.DELETE else Call.UPDATE
        if call is Call.DELETE:
            return Plan(call, bitrix_id, stale=stale)
    else:
        no_call = _without_call(head.op, state, recreate_deleted=recreate_deleted)
        if no_call is not None:
            return Plan(None, skip=no_call.skip, dead=no_call.dead, done=no_call.done, stale=stale)
        call = Call.CREATE
    try:
        if not plain(fields):  # plain values (nearly every operation) hold no reference: no copy to make
            fields = substitute(fields, known or {})
        products = substitute(products, known or {})
    except Unresolved as exc:
        return Plan(None, dead=Reason.REF_UNRESOLVED, stale=stale, unresolved=exc.ref, detail=str(exc))
    if call is Call.UPDATE:
        return _update(spec, bitrix_id, fields, products, stale, followups_only=unit.followups_only)
    create_fields = {**calls.fields_for(spec, fields), **spec.origin_values(originator_id, head.key)}
    return Plan(
        Call.CREATE,
        None,
        create_fields,
        stale=stale,
        reconcile=unit.ambiguous_before or state == "unknown" or (mapping is None and not vouched),
        products=products,
    )


def without_members(plan: Plan, unit: WorkUnit, refused: set[int]) -> Plan:
    """The plan of a unit some of whose coalesced operations were refused before sending (screening): the
    others merged exactly as ``plan_unit`` merges them, so a refused operation's fields, rows and pipeline
    move go nowhere, and the rest keep their own (a deal's ``CATEGORY_ID`` still becomes its move).

    Operations with references never coalesce (redis/lua/turns.lua), so a unit of several has none to
    substitute. A create keeps its origin fields."""
    spec = unit.head.entity.spec
    fields: dict[str, Any] = {}
    products: list[dict[str, Any]] | None = None
    for i, m in enumerate(unit.members):
        if i in plan.stale or i in refused:
            continue
        fields.update(calls.fields_for(spec, m.operation.fields))
        if m.operation.products is not None:
            products = m.operation.products
    if plan.call is Call.CREATE:
        origin = {k: v for k, v in plan.fields.items() if k in spec.origin_fields}
        return replace(plan, fields={**calls.fields_for(spec, fields), **origin}, products=products)
    return _update(spec, plan.bitrix_id, fields, products, plan.stale, followups_only=unit.followups_only)


def _update(
    spec: EntitySpec,
    bitrix_id: int | None,
    fields: dict[str, Any],
    products: list[dict[str, Any]] | None,
    stale: tuple[int, ...],
    *,
    followups_only: bool,
) -> Plan:
    """An update of a live entity: its own call, and the follow-ups (rows, a deal's pipeline move).

    A retry of follow-ups that failed after the entity was written (``followups_only``) sends them alone;
    so does an update that only sets rows or moves the pipeline (no empty entity update is sent)."""
    own, move = split_pipeline_move(spec, fields)
    if spec.api is Api.ITEM:
        own = calls.fields_for(spec, own)
    category = move.fields["categoryId"] if move else own.get(spec.category_field or "", None)
    followups = products is not None or move is not None
    if followups and (followups_only or not own):
        return Plan(None, bitrix_id, stale=stale, products=products, move=move, category=category,
                    followups_only=True)  # fmt: skip
    return Plan(Call.UPDATE, bitrix_id, own, stale=stale, products=products, move=move, category=category)


def _without_call(op: OpKind, state: str | None, *, recreate_deleted: bool) -> Plan | None:
    """What a key without a live Bitrix24 id does with an update or delete (None: it creates)."""
    if op not in (OpKind.UPDATE, OpKind.DELETE):
        return None
    if state in ("failed", "unknown"):
        return Plan(None, dead=Reason.CREATE_FAILED)  # it waits with its create in the dead-letter stream
    if op is OpKind.DELETE:
        return Plan(None, done=Reason.ALREADY_DELETED if state == "deleted" else Reason.NOTHING_TO_DELETE)
    if state == "deleted" and recreate_deleted:
        return None
    return Plan(None, skip=Reason.DELETED_IN_BITRIX24 if state == "deleted" else Reason.NO_BITRIX_ID)


def command_for(plan: Plan, spec: EntitySpec) -> Command:
    """The Bitrix24 command that carries out a plan with a call (fields already in the API's spelling)."""
    if plan.call is Call.CREATE:
        return calls.create(spec, plan.fields)
    if plan.call is None or plan.bitrix_id is None:
        raise BitrixWorkerError(f"{spec.name}: no command for {plan.call} without a Bitrix24 id")
    if plan.call is Call.UPDATE:
        return calls.update(spec, plan.bitrix_id, plan.fields)
    return calls.delete(spec, plan.bitrix_id)


def adopt_and_update(plan: Plan, bitrix_id: int, spec: EntitySpec) -> Plan:
    """A create that found its key already in Bitrix24 (made by another create of the key: the store could
    not vouch, or an earlier create was given up): update what is there with this operation's fields."""
    fields = {k: v for k, v in plan.fields.items() if k not in spec.origin_fields}
    return Plan(Call.UPDATE, bitrix_id, fields, stale=plan.stale, products=plan.products)
