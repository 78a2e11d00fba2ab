"""Follow-ups: what an order needs after its entity is written — its product rows and a deal's pipeline move.

Both need the entity's id, so they cannot travel beside a create in the same ``halt=0`` batch: a reference
``$result[c0]`` to a create that failed becomes the array of earlier results, which the old API reads as id
1 (rows on another customer's deal). So a batch of units is delivered in two requests: phase 1 writes
every entity (``delivery``, one ``batch``, ``halt=0``, independent commands); phase 2 (``run``) sends every
follow-up with the now-known literal ids in one more ``batch``. Clearing rows (``products: []``) goes alone:
a PHP query string cannot carry an empty list, so inside a batch it would arrive as a missing parameter.

One case may use a reference: a unit alone in its request (``lone_chain``). Its create (or update) and its
follow-ups are then one chain sent with ``halt=1``: if the write fails, the portal stops and the
follow-ups do not run at all, so they can never land on a wrong entity.

A follow-up that fails after the entity was written is judged like any failure, but the result keeps the
entity's id (its mapping row is written) and a retry carries ``followups_only``: the next attempt sends
the follow-ups alone, never a second entity. The outcome says what happened (``Reason.ROWS_RETRIED``,
``Reason.MOVED``, the detail names the rows).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import calls
from .bitrix.items import build_chain, ref
from .bitrix.methods import MAX_BATCH_COMMANDS, Command
from .crm import EntitySpec
from .errors import BitrixWorkerError
from .gate import PortalGate, PortalView
from .outcomes import Outcome, Result
from .packing import Packer, Part
from .plan import Call, Plan
from .reasons import Reason
from .sending import Answered, Failed, Sender
from .units import WorkUnit
from .values import State


class Judge(Protocol):
    """``Delivery._failure``: one failed command of a unit -> its Result (I/O around ``judge_failure``)."""

    def __call__(
        self,
        unit: WorkUnit,
        plan: Plan,
        answer: Answered | Failed,
        name: str,
        *,
        method: str,
        view: PortalView,
    ) -> Awaitable[Result]: ...


MAIN = "c0"  # the unit's own command in a lone chain


@dataclass(slots=True)
class Written:
    """A unit whose entity is written (``result`` is APPLIED with its id) and whose follow-ups are due."""

    unit: WorkUnit
    plan: Plan
    result: Result
    chained: Answered | Failed | None = None  # the lone chain's answer, when the follow-ups went in it
    view: PortalView | None = None  # the gate's view of that answer
    steps: dict[str, Command] = field(default_factory=dict)


def steps_for(plan: Plan, spec: EntitySpec, owner: int | str) -> dict[str, Command]:
    """The follow-up commands of a plan, in order: the pipeline move first, then the rows."""
    steps: dict[str, Command] = {}
    if plan.move is not None and isinstance(owner, int):
        steps["move"] = calls.move(plan.move, owner)
    if plan.products is not None:
        steps["rows"] = calls.rows(spec, owner, plan.products)
    return steps


def lone_chain(unit: WorkUnit, plan: Plan, commands: dict[str, Command]) -> dict[str, Command] | None:
    """A lone unit's write (``commands[MAIN]``) and its follow-ups as one ``halt=1`` chain, or None when
    that is not possible (no write, no follow-ups, or rows ``[]``, which a batch cannot encode)."""
    command = commands.get(MAIN)
    if (
        command is None
        or not plan.has_followups
        or plan.products == []
        or plan.call not in (Call.CREATE, Call.UPDATE)
    ):
        return None
    spec = unit.head.entity.spec
    owner: int | str | None = plan.bitrix_id
    if plan.call is Call.CREATE:
        owner = ref(MAIN, *calls.id_path(spec))
    if owner is None:
        return None
    chain = {MAIN: command, **{f"{name}0": c for name, c in steps_for(plan, spec, owner).items()}}
    try:
        build_chain(chain)  # the chain rules: references to earlier commands only, nothing empty
    except ValueError:
        return None
    return chain


# successful call -> (reason, what to record in the mapping store)
_SUCCESS: dict[Call, tuple[Reason, State]] = {
    Call.CREATE: (Reason.CREATED, "active"),
    Call.UPDATE: (Reason.UPDATED, "active"),
    Call.DELETE: (Reason.DELETED, "deleted"),
}


def write_result(unit: WorkUnit, plan: Plan, answer: object) -> Result:
    """The result of a unit's own command that succeeded (a create's id read from its answer)."""
    if plan.call is None:
        raise BitrixWorkerError(f"{unit.ident}: a success without a call")
    reason, state = _SUCCESS[plan.call]
    bitrix_id = (
        calls.created_id(unit.head.entity.spec, answer) if plan.call is Call.CREATE else plan.bitrix_id
    )
    return Result(unit, Outcome.APPLIED, reason, call=plan.call, bitrix_id=bitrix_id, mapping_state=state,
                  stale=plan.stale)  # fmt: skip


def already_written(unit: WorkUnit, plan: Plan) -> Written:
    """A unit with follow-ups only (a retry of failed rows, an update that only sets rows, a create found
    after an ambiguous attempt): its entity is there, with the id the store or the lookup holds."""
    reason, call = (Reason.ADOPTED, Call.CREATE) if plan.adopted else (Reason.UPDATED, Call.UPDATE)
    r = Result(unit, Outcome.APPLIED, reason, call=call, bitrix_id=plan.bitrix_id, mapping_state="active",
               stale=plan.stale)  # fmt: skip
    return Written(unit, plan, r)


def describe(w: Written) -> Result:
    """The outcome of a unit whose entity and follow-ups all went through."""
    r, plan = w.result, w.plan
    parts = [r.text]
    if w.unit.followups_only:
        r.reason, parts = Reason.ROWS_RETRIED, [Reason.ROWS_RETRIED.sentence]
    elif plan.category is not None and r.reason is Reason.UPDATED:
        r.reason, parts = Reason.MOVED, [f"updated and moved to pipeline {plan.category}"]
    if plan.products is not None:
        n = len(plan.products)
        parts.append(f"product rows set ({n})" if n else "product rows cleared")
    r.detail = "; ".join(parts) if len(parts) > 1 or r.reason is Reason.MOVED else r.detail
    return r


Sent = list[tuple[str, Answered | Failed, str, PortalView]]
"""One unit's follow-ups as sent: (step, its request's answer, its command's name there, the gate's view)."""


class Followups:
    """Phase 2 of a batch: one request for every follow-up, literal ids only."""

    def __init__(self, sender: Sender, gate: PortalGate, judge: Judge) -> None:
        self.sender = sender
        self.gate = gate
        self.judge = judge
        self.packer = Packer(sender, gate.assess)  # shared by the batches this process delivers at once
        self._names = itertools.count()  # command names unique in the process: parts may share a request

    async def run(self, written: Sequence[Written]) -> list[Result]:
        """The final result of each written unit, in order."""
        for w in written:
            owner = w.result.bitrix_id if w.result.bitrix_id is not None else w.plan.bitrix_id
            w.steps = steps_for(w.plan, w.unit.head.entity.spec, owner) if owner is not None else {}
        sent = await self._send([w for w in written if w.chained is None])
        out = []
        for w in written:
            if w.chained is not None and w.view is not None:
                chained, view = w.chained, w.view
                out.append(await self._settle(w, [(s, chained, f"{s}0", view) for s in w.steps]))
            else:
                out.append(await self._settle(w, sent.get(id(w), [])))
        return out

    async def _send(self, due: Sequence[Written]) -> dict[int, Sent]:
        """Every non-empty follow-up in requests of at most 50 commands, shared with the phase 2 of other
        batches waiting at the same time (``packing``); each clear of rows alone."""
        batches: list[dict[str, tuple[Written, str, Command]]] = [{}]
        alone: list[dict[str, tuple[Written, str, Command]]] = []
        for w in due:
            for step, command in w.steps.items():
                item = {f"{step}{next(self._names)}": (w, step, command)}
                if step == "rows" and not command.params.get("productRows"):
                    alone.append(item)
                    continue
                if len(batches[-1]) == MAX_BATCH_COMMANDS:
                    batches.append({})
                batches[-1].update(item)
        sent: dict[int, Sent] = {}
        for request, lone in [*((r, False) for r in batches if r), *((r, True) for r in alone)]:
            bounces = max(w.unit.bounces for w, _, _ in request.values())
            commands = {n: c for n, (_, _, c) in request.items()}
            units = list({id(w): w.unit for w, _, _ in request.values()}.values())
            if lone:
                answer = await self.sender.send(commands, refused_before=bounces)
                view = await self.gate.assess(answer, units)  # once per request: the gate counts requests
            else:
                answer, view = await self.packer.send(Part(commands, units, bounces))
            for name, (w, step, _) in request.items():
                sent.setdefault(id(w), []).append((step, answer, name, view))
        return sent

    async def _settle(self, w: Written, sent: Sent) -> Result:
        failed = [f for f in sent if not (isinstance(f[1], Answered) and f[2] in f[1].results)]
        if not failed:
            return describe(w)
        step, answer, name, view = failed[0]
        r = await self.judge(w.unit, _as_update(w), answer, name, method=w.steps[step].method, view=view)
        r.bitrix_id = w.result.bitrix_id
        if r.mapping_state is None:
            r.mapping_state = "active"  # the entity exists: its key must never be created again
        if r.outcome is Outcome.RETRY:
            w.unit.followups_only = True
        what = "pipeline move" if step == "move" else "product rows"
        fate = "are retried alone" if r.outcome is Outcome.RETRY else "failed"
        r.detail = f"{r.text}; the {w.unit.head.entity} was written (id {r.bitrix_id}), its {what} {fate}"
        return r


def _as_update(w: Written) -> Plan:
    """A follow-up's failure is judged as an update of the written entity (never a create's retry)."""
    return Plan(Call.UPDATE, w.result.bitrix_id, stale=w.plan.stale)
