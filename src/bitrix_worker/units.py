"""Units of work: one or more operations of one key that travel, retry and finish together.

A producer's entry is a unit of one operation. Updates of a key that arrive together are coalesced into one
unit (one Bitrix24 call with merged fields, the later value of each field winning). A unit carries its error
history; when it is scheduled for a retry it is stored as JSON and comes back as one stream entry.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .defaults import DESCRIPTION_MAX_CHARS, HISTORY_MAX_ENTRIES
from .errors import PoisonMessage
from .operations import Operation, OpKind, decode_payload
from .redaction import redact
from .taxonomy import Classification, Execution


def now_ms() -> int:
    return int(time.time() * 1000)


def raw_ident(payload: bytes | None) -> str:
    """The key claim.lua derived for a producer entry (it may exist even if the payload is invalid)."""
    if payload is None:
        return ""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict):
        return ""
    entity, key, op = data.get("entity"), data.get("key"), data.get("op")
    if isinstance(entity, str) and isinstance(key, str) and isinstance(op, str):
        return f"{entity}:{key}"
    return ""


@dataclass(slots=True)
class Member:
    """One operation inside a unit. ``origin`` is the stream id it was first enqueued under."""

    origin: str
    payload: str
    operation: Operation
    prior_history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class WorkUnit:
    ident: str
    members: list[Member]
    stream_ids: list[str]
    failures: int = 0  # budget-spending failures so far
    bounces: int = 0  # limit refusals so far (never spend the budget)
    history: list[dict[str, Any]] = field(default_factory=list)
    deliveries: int = 1

    @property
    def head(self) -> Operation:
        return self.members[0].operation

    @property
    def origin(self) -> str:
        return self.members[0].origin

    @property
    def attempts(self) -> int:
        return sum(1 for h in self.history if h.get("kind") == "attempt")

    @property
    def ambiguous_before(self) -> bool:
        """A previous attempt may have committed: a create must look itself up before trying again."""
        return self.deliveries > 1 or any(
            h.get("execution") == Execution.AMBIGUOUS.value for h in self.history
        )

    def merged_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for m in self.members:
            fields.update(m.operation.fields)
        return fields

    def max_version(self) -> int | None:
        versions = [m.operation.version for m in self.members if m.operation.version is not None]
        return max(versions) if versions else None

    def record(
        self, c: Classification, *, method: str, kind: str = "attempt", secrets: tuple[str, ...] = ()
    ) -> None:
        self.history.append(
            {
                "kind": kind,
                "attempt": self.attempts + (1 if kind == "attempt" else 0),
                "class": c.error_class.value,
                "execution": c.execution.value,
                "http_status": c.http_status,
                "bitrix_code": c.bitrix_code,
                "description": redact(c.description, secrets)[:DESCRIPTION_MAX_CHARS],
                "method": method,
                "at_ms": now_ms(),
            }
        )
        if len(self.history) > HISTORY_MAX_ENTRIES:
            del self.history[1 : len(self.history) - HISTORY_MAX_ENTRIES + 1]

    def to_json(self) -> str:
        return json.dumps(
            {
                "ident": self.ident,
                "members": [
                    {"origin": m.origin, "payload": m.payload, "history": json.dumps(m.prior_history)}
                    if m.prior_history
                    else {"origin": m.origin, "payload": m.payload}
                    for m in self.members
                ],
                "failures": self.failures,
                "bounces": self.bounces,
                "history": self.history,
            },
            separators=(",", ":"),
        )


def _prior(raw: Any) -> list[dict[str, Any]]:
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return []
    return [h for h in value if isinstance(h, dict)] if isinstance(value, list) else []


def unit_from_json(text: str, stream_id: str, deliveries: int = 1) -> WorkUnit:
    """Rebuild a unit re-added by settle/promote. Raises PoisonMessage if it was tampered with."""
    try:
        data = json.loads(text)
        members = [
            Member(m["origin"], m["payload"], decode_payload(m["payload"]), _prior(m.get("history")))
            for m in data["members"]
        ]
        return WorkUnit(
            ident=str(data["ident"]),
            members=members,
            stream_ids=[stream_id],
            failures=int(data.get("failures", 0)),
            bounces=int(data.get("bounces", 0)),
            history=list(data.get("history") or []),
            deliveries=deliveries,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PoisonMessage(f"unreadable retry unit: {exc}") from None


def can_follow(segment: list[OpKind], kind: OpKind) -> bool:
    """Mirror of claim.lua's coalescing rule: which operation may join the unit built so far."""
    if not segment or segment[0] is OpKind.DELETE:
        return False
    if kind is OpKind.UPDATE:
        return True
    if kind is OpKind.UPSERT:
        return OpKind.UPDATE not in segment
    return False


def is_create_like(op: OpKind) -> bool:
    return op in (OpKind.CREATE, OpKind.UPSERT)
