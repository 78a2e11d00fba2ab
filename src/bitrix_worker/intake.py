"""Pure: stream entries -> units of work, and what an unprocessable entry turns into.

A claim hands the worker raw entries; here they become ``WorkUnit``s (entries of one key together, in stream
order, redeliveries remembered) or ``Poison`` (unreadable, or delivered so often that it keeps failing a
worker), which is dead-lettered one operation at a time under its original stream ids. No I/O and no
clock: the time is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import boundedjson
from .defaults import UNIT_MAX_BYTES, UNSENT_DELIVERIES_FACTOR
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
from .units import Member, WorkUnit, unit_from_json
from .values import PAYLOAD_FIELD, Entry, Settlement


@dataclass(slots=True)
class Poison:
    entry: Entry
    ident: str  # the key's turn it holds, as Redis gave it ("" when it holds none)
    reason: str
    unit: WorkUnit | None = None  # what it carries, when readable (a crash-looping create is looked up first)
    crash_loop: bool = False  # readable, but sent too often without finishing; may be looked up (rescue)


def build_units(
    entries: Sequence[Entry], *, max_deliveries: int, at_ms: int, portal: str | None = None
) -> tuple[list[WorkUnit], list[Poison]]:
    """Group entries by key (stream order kept); anything unreadable or crash-looping is poison.

    Each entry is judged alone: whatever one holds, it becomes a unit member or poison with its reason,
    and never stops the others read with it from being delivered. ``portal``: the portal this stream
    serves; an operation naming another one is poison (it would be applied to the wrong portal).
    """
    units: dict[str, WorkUnit] = {}
    poison: list[Poison] = []
    for e in entries:
        unit: WorkUnit | None = None
        unreadable = ""
        try:
            unit = _unit(e, portal)
        except PoisonMessage as exc:
            unreadable = exc.reason
        except Exception as exc:  # a last resort: one entry's surprise must not stall its batch
            unreadable = f"unreadable entry: {type(exc).__name__}"
        looping = _crash_loop(e, max_deliveries)
        if unit is None or looping is not None:
            # a readable entry over the sent cap (not the wider one) may be looked up before it goes (rescue)
            rescuable = unit is not None and e.deliveries <= max_deliveries * UNSENT_DELIVERIES_FACTOR
            poison.append(Poison(e, e.ident, looping or unreadable, unit, crash_loop=rescuable))
            continue
        if e.deliveries > 1:
            unit.remember(redelivery_entry(e.deliveries, at_ms))
        if e.whose == "replay":  # recorded by replay.lua, never a producer's field
            unit.remember(replay_entry(at_ms))
        existing = units.get(unit.ident)
        if existing is None:
            units[unit.ident] = unit
        else:
            existing.members += unit.members
            existing.stream_ids += unit.stream_ids
            existing.deliveries = max(existing.deliveries, unit.deliveries)
    return list(units.values()), poison


def _crash_loop(e: Entry, max_deliveries: int) -> str | None:
    """Why the entry counts as crash-looping, if it does.

    Only deliveries whose batch was actually sent count against ``max_deliveries``: a worker killed while its
    batch waited for the limiter sent nothing, and an operation must not be dead-lettered for that. Entries
    redelivered many more times without ever being sent (they kill a worker before it sends) are caught by
    the wider bound.
    """
    if e.sent >= max_deliveries:
        return f"sent {e.sent} times without finishing: it keeps failing a worker"
    if e.deliveries > max_deliveries * UNSENT_DELIVERIES_FACTOR:
        return f"delivered {e.deliveries} times without finishing: it keeps failing a worker"
    return None


def _unit(e: Entry, portal: str | None = None) -> WorkUnit:
    """The entry as a unit of work. Only the worker's own entries (as Redis recorded them) are read for
    ``unit`` or ``history``; a producer's entry is its ``payload`` and nothing else."""
    if e.whose == "unit":
        unit_json = e.text("unit")
        if unit_json is None:
            raise PoisonMessage("retry unit without its 'unit' field")
        unit = unit_from_json(unit_json, e.id, e.deliveries)
        if e.ident:
            unit.ident = e.ident
        return unit
    operation = decode_payload(e.payload)
    if portal is not None and operation.portal not in (None, portal):
        raise PoisonMessage(
            f"names portal {operation.portal!r} but was queued for portal {portal!r} "
            "(enqueue it with portal=..., which writes to that portal's stream)"
        )
    if operation.ident != e.ident:
        raise PoisonMessage(f"key {operation.key!r} is not one Redis can hold a turn for (not valid UTF-8?)")
    prior = history_from_json(e.text("history")) if e.whose == "replay" else []
    member = Member(e.id, e.text("payload") or "", operation, prior)
    return WorkUnit(e.ident, [member], [e.id], history=list(prior), deliveries=e.deliveries)


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
        by_ident.setdefault(e.ident or e.id, []).append(e)
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
    unit = entry.text("unit") if entry.whose == "unit" else None
    if unit is not None:
        try:
            data = boundedjson.loads(unit, max_bytes=UNIT_MAX_BYTES, what="retry unit")
            history = history_from_json(data.get("history"))
            return [(str(m["payload"]), str(m["origin"]), history) for m in data["members"]]
        except (ValueError, TypeError, KeyError, AttributeError):
            return [(unit, entry.id, [])]
    # The producer's bytes, unchanged even when they are not UTF-8: surrogateescape here, and the settlement's
    # encoder (redis/streams.lua_json) turns the escapes back into the very bytes.
    return [(entry.fields.get(PAYLOAD_FIELD, b"").decode("utf-8", errors="surrogateescape"), entry.id, [])]


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
