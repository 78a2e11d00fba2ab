"""Units of work: one or more operations of one key that travel, retry and finish together.

A producer's entry is a unit of one operation. Updates of a key that arrive together are coalesced into one
unit (one Bitrix24 call with merged fields, the later value of each field winning; the rule itself lives in
``redis/lua/coalesce.lua``, where the turns are given). A unit carries its error history; when it is
scheduled for a retry it is stored as JSON and comes back as one stream entry.

A unit whose entity was written but whose follow-ups (product rows, a pipeline move) failed is retried
with ``followups_only`` set: its next attempt sends only those, never a second entity.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import boundedjson
from .defaults import HISTORY_MAX_ENTRIES, UNIT_MAX_BYTES
from .errors import PoisonMessage
from .operations import Operation, decode_payload
from .records import HistoryEntry, attempt_entry, attempts_in, history_from_json
from .taxonomy import Classification, Execution


@dataclass(slots=True)
class Member:
    """One operation inside a unit. ``origin`` is the stream id it was first enqueued under."""

    origin: str
    payload: str
    operation: Operation
    prior_history: list[HistoryEntry] = field(default_factory=list)


@dataclass(slots=True)
class WorkUnit:
    ident: str
    members: list[Member]
    stream_ids: list[str]
    failures: int = 0  # budget-spending failures so far
    bounces: int = 0  # limit refusals so far (never spend the budget)
    history: list[HistoryEntry] = field(default_factory=list)
    deliveries: int = 1
    followups_only: bool = False  # the entity was written; only its rows / pipeline move are left

    @property
    def head(self) -> Operation:
        return self.members[0].operation

    @property
    def origin(self) -> str:
        return self.members[0].origin

    @property
    def attempts(self) -> int:
        return attempts_in(self.history) if self.history else 0  # most units have none: no generator

    @property
    def ambiguous_before(self) -> bool:
        """A previous attempt may have committed: a create must look itself up before trying again."""
        return self.deliveries > 1 or any(
            h.get("execution") == Execution.AMBIGUOUS.value for h in self.history
        )

    def max_version(self) -> int | None:
        versions = [m.operation.version for m in self.members if m.operation.version is not None]
        return max(versions) if versions else None

    def remember(self, entry: HistoryEntry) -> None:
        """Append to the history, keeping the first entry and the newest ones within the cap."""
        self.history.append(entry)
        if len(self.history) > HISTORY_MAX_ENTRIES:
            del self.history[1 : len(self.history) - HISTORY_MAX_ENTRIES + 1]

    def record(
        self,
        c: Classification,
        *,
        method: str,
        at_ms: int,
        secrets: Sequence[str] = (),
        portal: bool = False,
    ) -> None:
        """Remember one failed attempt (``portal``: the whole request failed, maybe by the portal's fault)."""
        entry = attempt_entry(
            c, attempt=self.attempts + 1, method=method, at_ms=at_ms, secrets=secrets, portal=portal
        )
        self.remember(entry)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "ident": self.ident,
            "members": [_member_json(m) for m in self.members],
            "failures": self.failures,
            "bounces": self.bounces,
            "history": self.history,
        }
        if self.followups_only:  # absent otherwise: units written before it existed read the same
            data["followups_only"] = len(self.members)  # the members whose entity write is done
        return json.dumps(
            data,
            separators=(",", ":"),
            # no \uXXXX escapes: cjson (promote.lua) refuses a lone surrogate escape, which a portal's error
            # text could carry into the history; raw, the settlement's encoder makes it "?" (streams.lua_json)
            ensure_ascii=False,
        )


def _member_json(m: Member) -> dict[str, Any]:
    data: dict[str, Any] = {"origin": m.origin, "payload": m.payload}
    if m.prior_history:
        data["history"] = json.dumps(m.prior_history)
    return data


def unit_from_json(text: str, stream_id: str, deliveries: int = 1) -> WorkUnit:
    """Rebuild a unit re-added by settle/promote. Raises PoisonMessage if it was tampered with."""
    try:
        data = boundedjson.loads(text, max_bytes=UNIT_MAX_BYTES, what="retry unit")
        members = [
            Member(
                m["origin"], m["payload"], decode_payload(m["payload"]), history_from_json(m.get("history"))
            )
            for m in data["members"]
        ]
        return WorkUnit(
            ident=str(data["ident"]),
            members=members,
            stream_ids=[stream_id],
            failures=int(data.get("failures", 0)),
            bounces=int(data.get("bounces", 0)),
            history=history_from_json(data.get("history")),
            deliveries=deliveries,
            # a unit that gained members since (merged) sends its entity update again: harmless, never lost
            followups_only=data.get("followups_only") == len(members),
        )
    except (KeyError, TypeError, ValueError, AttributeError, PoisonMessage) as exc:
        raise PoisonMessage(f"unreadable retry unit: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, PoisonMessage):
        return exc.reason
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    return str(exc)[:200]
