"""Pure: stream entries -> units of work, and what an unprocessable entry turns into.

A claim hands the worker raw entries; here they become ``WorkUnit``s (entries of one key together, in stream
order, redeliveries remembered) or ``Poison`` (unreadable, or delivered so often that it keeps failing a
worker), which is dead-lettered one operation at a time under its original stream ids. No I/O and no
clock: the time is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import PoisonMessage
from .operations import decode_payload
from .reasons import Reason
from .records import (
    HistoryEntry,
    dead_letter_error,
    history_from_json,
    outcome_record,
    redelivery_entry,
    replay_entry,
)
from .taxonomy import ErrorClass
from .units import Member, WorkUnit, raw_ident, unit_from_json
from .values import Entry, Settlement


@dataclass(slots=True)
class Poison:
    entry: Entry
    ident: str  # the key's turn it holds ("" when the payload has no readable key)
    reason: str


def build_units(
    entries: Sequence[Entry], *, max_deliveries: int, at_ms: int
) -> tuple[list[WorkUnit], list[Poison]]:
    """Group entries by key (stream order kept); anything unreadable or crash-looping is poison."""
    units: dict[str, WorkUnit] = {}
    poison: list[Poison] = []
    for e in entries:
        ident = e.ident or raw_ident(e.payload)
        if e.deliveries > max_deliveries:
            poison.append(Poison(e, ident, f"delivered {e.deliveries} times: it keeps failing a worker"))
            continue
        try:
            unit = _unit(e, ident)
        except PoisonMessage as exc:
            poison.append(Poison(e, ident, exc.reason))
            continue
        if e.deliveries > 1:
            unit.remember(redelivery_entry(e.deliveries, at_ms))
        if e.text("replayed_from") is not None and e.text("unit") is None:
            unit.remember(replay_entry(at_ms))
        existing = units.get(unit.ident)
        if existing is None:
            units[unit.ident] = unit
        else:
            existing.members += unit.members
            existing.stream_ids += unit.stream_ids
            existing.deliveries = max(existing.deliveries, unit.deliveries)
    return list(units.values()), poison


def _unit(e: Entry, ident: str) -> WorkUnit:
    unit_json = e.text("unit")
    if unit_json is not None:
        return unit_from_json(unit_json, e.id, e.deliveries)
    operation = decode_payload(e.payload)
    prior = history_from_json(e.text("history"))
    member = Member(e.id, e.text("payload") or "", operation, prior)
    return WorkUnit(ident or operation.ident, [member], [e.id], history=list(prior), deliveries=e.deliveries)


def poison_settlement(p: Poison, at_ms: int) -> Settlement:
    """Ack the entry, release its key's turn, and dead-letter every operation it carries."""
    items = poison_items(p.entry)
    return Settlement(
        ids=[p.entry.id],
        ident=p.ident,
        action="dead",
        dead=[
            ["payload", payload, "error", poison_error(p.reason, origin, history, at_ms)]
            for payload, origin, history in items
        ],
        outcomes=[poison_outcome(origin, p.ident, at_ms) for _, origin, _ in items],
        counters={"outcome:dead_lettered": len(items), "dead_lettered:poison": len(items)},
    )


def by_key(entries: Sequence[Entry], keys_per_batch: int) -> list[list[Entry]]:
    """Split reclaimed entries into batches of at most ``keys_per_batch`` keys, never splitting a key: the
    entries of one key are one unit and must run together, in one batch."""
    by_ident: dict[str, list[Entry]] = {}
    for e in entries:
        by_ident.setdefault(e.ident or raw_ident(e.payload) or e.id, []).append(e)
    groups = list(by_ident.values())
    return [
        [e for group in groups[i : i + keys_per_batch] for e in group]
        for i in range(0, len(groups), keys_per_batch)
    ]


def poison_items(entry: Entry) -> list[tuple[str, str, list[HistoryEntry]]]:
    """(payload, original stream id, history) of each operation a poison entry carries.

    A retry unit that keeps failing a worker carries several operations: each is dead-lettered under its
    own original id with its own payload, as if it had failed alone.
    """
    unit = entry.text("unit")
    if unit is not None:
        try:
            data = json.loads(unit)
            history = history_from_json(data.get("history"))
            return [(str(m["payload"]), str(m["origin"]), history) for m in data["members"]]
        except (ValueError, TypeError, KeyError, AttributeError):
            return [(unit, entry.id, [])]
    return [(entry.text("payload") or "", entry.id, [])]


def poison_error(reason: str, stream_id: str, history: list[HistoryEntry], at_ms: int) -> str:
    return dead_letter_error(
        reason=reason, history=history, stream_id=stream_id, at_ms=at_ms, error_class=ErrorClass.POISON.value
    )


def poison_outcome(origin: str, ident: str, at_ms: int) -> list[str]:
    return outcome_record(
        stream_id=origin,
        ident=ident,
        outcome="dead_lettered",
        reason=Reason.POISON.sentence,
        code=Reason.POISON.value,
        at_ms=at_ms,
        error_class=ErrorClass.POISON.value,
    )
