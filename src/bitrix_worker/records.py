"""What is written down about an operation, built in one place: its error history, its dead-letter
``error`` object and its outcome record.

The history travels inside retry units and dead-letter entries as JSON, so entries are plain dicts typed
as ``HistoryEntry``; these functions are the only places that make them. No I/O and no clock: times are
passed in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypedDict, cast

from . import boundedjson
from .defaults import DESCRIPTION_MAX_CHARS, HISTORY_MAX_BYTES
from .redaction import redact
from .taxonomy import Classification, ErrorClass, Execution

HistoryEntry = TypedDict(
    "HistoryEntry",
    {
        "kind": str,  # "attempt" (a request that failed) or "redelivery" (a crash may have sent it)
        "attempt": int,
        "class": str,
        "execution": str,
        "http_status": int | None,
        "bitrix_code": str | None,
        "description": str,
        "method": str,
        "deliveries": int,
        "portal": bool,  # the whole request failed in a way that may be the portal's (gate.own_failure)
        "at_ms": int,
    },
    total=False,
)

ATTEMPT = "attempt"
REDELIVERY = "redelivery"
REPLAY = "replay"


def attempt_entry(
    c: Classification,
    *,
    attempt: int,
    method: str,
    at_ms: int,
    secrets: Sequence[str] = (),
    portal: bool = False,
) -> HistoryEntry:
    """One failed attempt; the description is truncated and free of secrets."""
    entry: HistoryEntry = {
        "kind": ATTEMPT,
        "attempt": attempt,
        "class": c.error_class.value,
        "execution": c.execution.value,
        "http_status": c.http_status,
        "bitrix_code": c.bitrix_code,
        "description": redact(c.description, tuple(secrets))[:DESCRIPTION_MAX_CHARS],
        "method": method,
        "at_ms": at_ms,
    }
    if portal:
        entry["portal"] = True
    return entry


def redelivery_entry(deliveries: int, at_ms: int) -> HistoryEntry:
    """The entry was delivered again after a crash: the attempt may have been sent, so a create must look
    itself up first, even after it is rescheduled under a new stream id."""
    return {
        "kind": REDELIVERY,
        "execution": Execution.AMBIGUOUS.value,
        "deliveries": deliveries,
        "at_ms": at_ms,
    }


def replay_entry(at_ms: int) -> HistoryEntry:
    """An operator replayed it from the dead-letter stream: it may have run before it was given up (a batch
    can commit and still be dead-lettered), so a create looks itself up first."""
    return {"kind": REPLAY, "execution": Execution.AMBIGUOUS.value, "at_ms": at_ms}


def attempts_in(history: Sequence[Any]) -> int:
    return sum(1 for h in history if isinstance(h, dict) and h.get("kind") == ATTEMPT)


def history_from_json(raw: Any) -> list[HistoryEntry]:
    """A history as stored in a stream field or unit JSON; anything unreadable is an empty history."""
    if not raw:
        return []
    try:
        value = (
            boundedjson.loads(raw, max_bytes=HISTORY_MAX_BYTES, what="history")
            if isinstance(raw, str | bytes)
            else raw
        )
    except boundedjson.UnreadableJson:
        return []
    if not isinstance(value, list):
        return []
    return [cast(HistoryEntry, h) for h in value if isinstance(h, dict)]


def dead_letter_error(
    *,
    reason: str,
    history: Sequence[Any],
    stream_id: str,
    at_ms: int,
    classification: Classification | None = None,
    error_class: str = ErrorClass.POISON.value,
    may_have_run: bool = False,
) -> str:
    """The ``error`` field of a dead-letter entry (its shape is documented in the README).

    Without a classification (poison) the class is ``error_class`` and the description is the reason.
    ``may_have_run``: a create that may have made its entity before it was given up (a replay of it looks
    itself up first).
    """
    c = classification
    return json.dumps(
        {
            "class": c.error_class.value if c else error_class,
            "http_status": c.http_status if c else None,
            "bitrix_code": c.bitrix_code if c else None,
            "description": c.description if c else reason,
            "reason": reason,
            "attempts": attempts_in(history),
            "history": list(history),
            "stream_id": stream_id,
            "dead_lettered_at": at_ms,
            **({"may_have_run": True} if may_have_run else {}),
        },
        separators=(",", ":"),
    )


def outcome_record(
    *,
    stream_id: str,
    ident: str,
    outcome: str,
    reason: str,
    at_ms: int,
    op: str | None = None,
    attempts: int | None = None,
    code: str | None = None,
    error_class: str | None = None,
    bitrix_id: int | None = None,
) -> list[str]:
    """One entry of the outcomes stream, as the flat field/value list XADD takes (``op`` and ``attempts``
    are absent for an entry too broken to have them)."""
    record = ["stream_id", stream_id, "ident", ident]
    if op is not None:
        record += ["op", op]
    record += ["outcome", outcome, "reason", reason]
    if code is not None:
        record += ["code", code]
    if attempts is not None:
        record += ["attempts", str(attempts)]
    record += ["at_ms", str(at_ms)]
    if error_class is not None:
        record += ["class", error_class]
    if bitrix_id is not None:
        record += ["bitrix_id", str(bitrix_id)]
    return record
