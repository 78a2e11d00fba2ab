"""Plain value types that the pure core and the I/O adapters share; this module imports no I/O library.

They used to live beside the adapters that fill them (the mapping store, the stream reader), which made
``import bitrix_worker.plan`` load SQLAlchemy and ``import bitrix_worker.outcomes`` load redis-py. Here they
sit below both: the core computes with them, the adapters read and write them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Clock = Callable[[], float]
"""Unix time in seconds; injected wherever a pure function needs "now" (tests pass a fixed one)."""

PAYLOAD_FIELD = "payload"
"""The one stream-entry field a producer writes."""

State = Literal["active", "deleted", "unknown", "failed"]
"""A key's state in the mapping store. ``unknown``: a create may or may not have happened (it was given up
after an ambiguous failure); the next create of the key looks it up by ORIGIN_ID first. ``failed``: its create
was dead-lettered and certainly made nothing. Under either, the key's later updates and deletes are
dead-lettered behind their create (replaying the key's entries oldest first applies them in order)."""


def ms(clock: Clock) -> int:
    """``clock()`` in whole milliseconds, the unit of stream ids and every ``*_ms`` field."""
    return int(clock() * 1000)


def as_text(value: Any) -> str:
    """A Redis reply or field as text; invalid UTF-8 becomes U+FFFD rather than an exception."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@dataclass(slots=True, unsafe_hash=True)
class Mapping:
    """One row of the mapping store: (entity, key) -> Bitrix24 id, last applied version, state, fence.

    Not frozen, though nothing changes one once built (mypy would have refused an assignment while it was):
    ~100 are built per batch (read from the store, written back), and a frozen dataclass's ``__init__``
    (``object.__setattr__`` per field) cost three times a plain one's. ``unsafe_hash`` keeps the hash a
    frozen one had (its fields'), so it may still be a set member or a dict key."""

    entity: str
    key: str
    bitrix_id: int | None
    version: int | None
    state: State = "active"
    fence: int = 0


@dataclass(frozen=True, slots=True)
class LastWrite:
    """When a key was last written by an applied operation, and to what (for the replay guard)."""

    state: State
    version: int | None
    at_ms: int


@dataclass(slots=True)
class Entry:
    """One stream entry as read by this consumer (not frozen, like ``Mapping``, for the cost of building one
    per entry read; nothing changes one, and its ``fields`` dict never let it be hashed).

    ``ident`` is the key's turn Redis holds for it, exactly as the scripts derived it ("" for none); the
    worker never derives it again. ``whose`` says who wrote the entry, as Redis recorded it: "" a producer
    (only its ``payload`` is read), "unit" a retry unit or hand-off, "replay" a replayed dead letter (its
    ``history`` is the worker's). ``sent``: how many times a request carrying it already left for the portal.
    """

    id: str
    ident: str
    fields: dict[str, bytes]
    deliveries: int = 1
    whose: str = ""
    sent: int = 0

    @property
    def payload(self) -> bytes | None:
        return self.fields.get(PAYLOAD_FIELD)

    def text(self, name: str) -> str | None:
        raw = self.fields.get(name)
        return None if raw is None else as_text(raw)


@dataclass(slots=True)
class Settlement:
    """How one unit of work ends (or waits) — performed atomically by settle.lua."""

    ids: list[str]
    ident: str
    action: Literal["done", "retry", "dead"]
    delay_ms: int = 0
    origin: str = ""
    unit: str = ""
    dead: list[list[str]] = field(default_factory=list)
    outcomes: list[list[str]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ids": self.ids, "ident": self.ident, "action": self.action}
        if self.action == "retry":
            data.update(delay_ms=self.delay_ms, origin=self.origin, unit=self.unit)
        if self.dead:
            data["dead"] = self.dead
        if self.outcomes:
            data["outcomes"] = self.outcomes
        if self.counters:
            data["counters"] = self.counters
        return data
