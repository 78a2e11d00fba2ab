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


def plan_unit(unit: WorkUnit, mapping: Mapping | None, *, originator_id: str, recreate_deleted: bool) -> Plan:
    stale = _stale_members(unit, mapping.version if mapping else None)
    live = [m for i, m in enumerate(unit.members) if i not in stale]
    if not live:
        return Plan(None, skip=Reason.STALE, stale=stale)
    head = live[0].operation
    fields: dict[str, Any] = {}
    for m in live:
        fields.update(m.operation.fields)
    active = mapping is not None and mapping.state == "active" and mapping.bitrix_id is not None
    deleted = mapping is not None and mapping.state == "deleted"

    if head.op is OpKind.DELETE:
        if active:
            return Plan(Call.DELETE, mapping.bitrix_id if mapping else None, stale=stale)
        reason = Reason.ALREADY_DELETED if deleted else Reason.NOTHING_TO_DELETE
        return Plan(None, done=reason, stale=stale)
    if active:
        return Plan(Call.UPDATE, mapping.bitrix_id if mapping else None, fields, stale=stale)
    if head.op is OpKind.UPDATE and not (deleted and recreate_deleted):
        return Plan(None, skip=Reason.DELETED_IN_BITRIX24 if deleted else Reason.NO_BITRIX_ID, stale=stale)
    create_fields = {**fields, **origin_fields(originator_id, head.key)}
    unknown = mapping is not None and mapping.state == "unknown"
    return Plan(Call.CREATE, None, create_fields, stale=stale, reconcile=unit.ambiguous_before or unknown)


def command_for(plan: Plan, entity: str) -> Command:
    """The Bitrix24 command that carries out a plan with a call."""
    if plan.call is Call.CREATE:
        return crm_add(entity, plan.fields)
    if plan.call is None or plan.bitrix_id is None:
        raise BitrixWorkerError(f"{entity}: no command for {plan.call} without a Bitrix24 id")
    if plan.call is Call.UPDATE:
        return crm_update(entity, plan.bitrix_id, plan.fields)
    return crm_delete(entity, plan.bitrix_id)
