"""Pure: what one unit of work needs from Bitrix24, given what the mapping store knows about its key.

No I/O and no clock. The worker looks the key up once per batch, calls ``plan_unit`` and performs the plan;
the rules below are what makes a retried create never a second entity and an old update never overwrite a
newer one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .bitrix.methods import Command, crm_add, crm_delete, crm_update
from .errors import BitrixWorkerError
from .operations import OpKind
from .reasons import Reason
from .units import WorkUnit
from .values import Mapping


class Call(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Plan:
    call: Call | None  # None: nothing to send
    bitrix_id: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    skip: Reason | None = None  # why no call, when the goal is not reached
    dead: Reason | None = None  # why no call, when it must be dead-lettered (its key's create failed)
    done: Reason | None = None  # why no call, when the goal is already reached (delete of a missing entity)
    stale: tuple[int, ...] = ()  # member indexes skipped as stale (the rest proceed)
    reconcile: bool = False  # look the entity up by ORIGINATOR_ID + ORIGIN_ID before creating


def origin_fields(originator_id: str, key: str) -> dict[str, str]:
    return {"ORIGINATOR_ID": originator_id, "ORIGIN_ID": key}


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
) -> Plan:
    """``vouched``: the mapping store has seen every create of the stream, so a key it does not know was
    never created; when it cannot vouch (``vouching``), such a create looks itself up first."""
    stale = _stale_members(unit, mapping.version if mapping else None)
    live = [m for i, m in enumerate(unit.members) if i not in stale]
    if not live:
        return Plan(None, skip=Reason.STALE, stale=stale)
    head = live[0].operation
    fields: dict[str, Any] = {}
    for m in live:
        fields.update(m.operation.fields)
    state = mapping.state if mapping is not None else None
    bitrix_id = mapping.bitrix_id if mapping is not None else None
    if state == "active" and bitrix_id is not None:
        call = Call.DELETE if head.op is OpKind.DELETE else Call.UPDATE
        return Plan(call, bitrix_id, fields if call is Call.UPDATE else {}, stale=stale)
    no_call = _without_call(head.op, state, recreate_deleted=recreate_deleted)
    if no_call is not None:
        return Plan(None, skip=no_call.skip, dead=no_call.dead, done=no_call.done, stale=stale)
    create_fields = {**fields, **origin_fields(originator_id, head.key)}
    return Plan(
        Call.CREATE,
        None,
        create_fields,
        stale=stale,
        reconcile=unit.ambiguous_before or state == "unknown" or (mapping is None and not vouched),
    )


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


def command_for(plan: Plan, entity: str) -> Command:
    """The Bitrix24 command that carries out a plan with a call."""
    if plan.call is Call.CREATE:
        return crm_add(entity, plan.fields)
    if plan.call is None or plan.bitrix_id is None:
        raise BitrixWorkerError(f"{entity}: no command for {plan.call} without a Bitrix24 id")
    if plan.call is Call.UPDATE:
        return crm_update(entity, plan.bitrix_id, plan.fields)
    return crm_delete(entity, plan.bitrix_id)


def adopt_and_update(plan: Plan, bitrix_id: int) -> Plan:
    """A create that found its key already in Bitrix24 (made by another create of the key: the store could
    not vouch, or an earlier create was given up): update what is there with this operation's fields."""
    fields = {k: v for k, v in plan.fields.items() if k not in ("ORIGINATOR_ID", "ORIGIN_ID")}
    return Plan(Call.UPDATE, bitrix_id, fields, stale=plan.stale)
