"""A create that keeps failing a worker is looked up in Bitrix24 before it is dead-lettered as poison.

An entry counts as crash-looping once batches carrying it were sent ``max_deliveries`` times and never
finished (``intake``). For a create that says little: the worker may have died after the portal created the
entity each time (a kill, a lost connection to the store), and dead-lettering it then would drop an applied
operation and invite a duplicate on replay. So its key is looked up by ORIGINATOR_ID + ORIGIN_ID first, all
such creates of a batch in one request: one that exists goes on as a normal unit (its delivery adopts the
entity and applies the rest); one that does not is dead-lettered, which is safe; when the lookup itself
fails, it is dead-lettered with a reason that says it may exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import calls
from .events import WorkerEvents
from .intake import Poison, poison_error, poison_items, poison_outcome, poison_settlement
from .operations import OpKind
from .reasons import Reason
from .records import redelivery_entry
from .redis.streams import OperationQueue
from .sending import Answered, Sender
from .taxonomy import ErrorClass
from .units import WorkUnit
from .values import Clock, ms

_MAY_CREATE = (OpKind.CREATE, OpKind.UPSERT)


async def look_up_crash_looping_creates(
    poison: Sequence[Poison], sender: Sender, *, originator_id: str, at_ms: int = 0
) -> tuple[list[Poison], list[WorkUnit]]:
    """(poison to dead-letter, units whose create already exists in Bitrix24 and go on to be delivered)."""
    creates = [
        (p, p.unit) for p in poison if p.crash_loop and p.unit is not None and p.unit.head.op in _MAY_CREATE
    ]
    if not creates:
        return list(poison), []
    commands = {
        f"r{i}": calls.lookup(unit.head.entity.spec, originator=originator_id, key=unit.head.key)
        for i, (_, unit) in enumerate(creates)
    }
    answer = await sender.send(commands)
    keep = [p for p in poison if not any(p is c for c, _ in creates)]
    found: list[WorkUnit] = []
    for i, (p, unit) in enumerate(creates):
        name = f"r{i}"
        if isinstance(answer, Answered) and calls.found_ids(
            unit.head.entity.spec, answer.results.get(name), originator=originator_id, key=unit.head.key
        ):
            unit.remember(redelivery_entry(unit.deliveries, at_ms))
            found.append(unit)
        elif isinstance(answer, Answered) and name in answer.results:
            p.reason += "; it is not in Bitrix24 (looked up by ORIGIN_ID), so it never ran"
            keep.append(p)
        else:
            p.reason += "; looking it up in Bitrix24 failed, so it may have been created"
            keep.append(p)
    return keep, found


def merge(units: list[WorkUnit], found: Sequence[WorkUnit]) -> list[WorkUnit]:
    """Add rescued units; one of a key already in the batch joins it, its members in stream order."""
    by_ident = {u.ident: u for u in units}
    for f in found:
        existing = by_ident.get(f.ident)
        if existing is None:
            units.append(f)
            by_ident[f.ident] = f
            continue
        existing.members = sorted(existing.members + f.members, key=lambda m: _order(m.origin))
        existing.stream_ids = sorted(existing.stream_ids + f.stream_ids, key=_order)
        existing.deliveries = max(existing.deliveries, f.deliveries)
        existing.history += f.history
    return units


def _order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)


async def dead_letter_poison(
    poison: Sequence[Poison], queue: OperationQueue, events: WorkerEvents, log: Any, clock: Clock
) -> None:
    """Dead-letter entries that can never be processed, one dead-letter entry per operation in them."""
    settlements = []
    for p in poison:
        log.error("dead-lettered", reason=p.reason, error_class="poison", stream_id=p.entry.id)
        at = ms(clock)
        for _ in poison_items(p.entry):
            events.outcome("dead_lettered", Reason.POISON, "", ErrorClass.POISON)
        if p.ident:
            settlements.append(poison_settlement(p, at))
        else:
            await queue.dead_letter_raw(
                p.entry, poison_error(p.reason, p.entry.id, [], at), poison_outcome(p.entry.id, "", at)
            )
    await queue.settle(settlements)
