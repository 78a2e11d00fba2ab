"""Before creating, look up the creates that may already have happened: all of a batch's in one request.

A create whose earlier attempt may have committed (a timeout, a redelivery after a crash, a key the store
cannot vouch for) searches Bitrix24 for the entity by the origin fields it writes (``ORIGINATOR_ID`` +
``ORIGIN_ID`` for the old API, ``xmlId`` for crm.item.*: ``calls.lookup``). Found after its own ambiguous
attempt: adopted, with its follow-ups still to send. Found but made by another create of the key: this
operation's fields are applied to it as an update. Not there: created.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from . import calls
from .followups import Judge
from .gate import PortalGate
from .outcomes import Outcome, Result
from .plan import Call, Plan, adopt_and_update
from .reasons import Reason
from .sending import Answered, Sender
from .units import WorkUnit


class Lookup(Protocol):
    unit: WorkUnit
    plan: Plan


async def reconcile(
    pending: list[Any],
    out: list[Result],
    *,
    sender: Sender,
    gate: PortalGate,
    originator: str,
    judge: Judge,
    log: Any,
) -> list[Any]:
    """The pending units still to send; the ones settled by the lookup go to ``out``."""
    need: Sequence[Lookup] = [p for p in pending if p.plan.reconcile]
    if not need:
        return pending
    commands = {
        f"r{i}": calls.lookup(p.unit.head.entity.spec, originator=originator, key=p.unit.head.key)
        for i, p in enumerate(need)
    }
    answer = await sender.send(commands, refused_before=max(p.unit.bounces for p in need))
    view = await gate.assess(answer, [p.unit for p in need])
    for i, p in enumerate(need):
        name = f"r{i}"
        spec = p.unit.head.entity.spec
        found = (
            calls.found_ids(spec, answer.results.get(name), originator=originator, key=p.unit.head.key)
            if isinstance(answer, Answered)
            else []
        )
        if found:
            if len(found) > 1:
                log.warning("duplicates already in Bitrix24", ident=p.unit.ident, n=len(found))
            if p.unit.ambiguous_before and p.plan.has_followups:  # made with these fields; rows unknown
                p.plan = replace(p.plan, call=None, bitrix_id=found[0], followups_only=True, adopted=True)
            elif p.unit.ambiguous_before:  # its own attempt made it, as is
                adopted = Result(
                    p.unit, Outcome.APPLIED, Reason.ADOPTED, call=Call.CREATE, stale=p.plan.stale
                )
                adopted.bitrix_id, adopted.mapping_state = found[0], "active"
                out.append(adopted)
            else:  # another create of this key made it (or its rows may be missing): apply this operation
                p.plan = adopt_and_update(p.plan, found[0], spec)
        elif isinstance(answer, Answered) and name in answer.results:
            if p.unit.ambiguous_before and not spec.origin_confirmed:  # not found proves nothing here
                out.append(
                    Result(p.unit, Outcome.DEAD, Reason.UNRECONCILABLE, call=Call.CREATE, stale=p.plan.stale)
                )
            # else not there: create it
        else:
            out.append(await judge(p.unit, p.plan, answer, name, method=commands[name].method, view=view))
    settled = {id(r.unit) for r in out}
    return [p for p in pending if id(p.unit) not in settled]
