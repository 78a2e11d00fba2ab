"""The dead-letter stream for operators: list, show, replay and purge entries.

Each entry holds the producer's ``payload`` unchanged and an ``error`` JSON (class, description, attempts,
history, ...). Replaying puts the payload back on the operation stream with its history in a ``history``
field: the worker reads it as prior attempts and starts the operation with a fresh retry budget, so the
audit trail survives the round trip. Replay is paced (``rate_per_s``) so that a large backlog released
after a fix does not arrive at Bitrix24 as one burst, and oldest entries go first to keep per-key order.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import boundedjson
from ..defaults import StreamKeys
from ..operations import decode_payload
from ..values import as_text
from .connection import RedisClient
from .errors import translated
from .scripts import register

PAGE = 500
READ_MAX_BYTES = 16 << 20  # shown, not processed: a payload over the worker's own limit still shows its key
SCAN_CAP = 100_000
"""Status counts classes over at most this many entries (a full scan of a huge DLQ is not a status read)."""
_ID = re.compile(r"^\d+(-\d+)?$")

Sleep = Callable[[float], Awaitable[None]]


def parse_id(raw: str) -> str:
    """A stream id as an operator types it (``1700000000000-0``, or just the ms part); ValueError if not."""
    value = raw.strip()
    if not _ID.match(value):
        raise ValueError(f"not a stream id: {raw!r} (expected <ms>-<seq>)")
    return value if "-" in value else f"{value}-0"


def stream_rows(raw: Any) -> list[tuple[Any, dict[Any, Any]]]:
    """XRANGE/XREVRANGE rows with redis-py's optional types narrowed (a missing stream reads as empty)."""
    return [(i, dict(f or {})) for i, f in raw or []]


@dataclass(frozen=True, slots=True)
class DeadEntry:
    """One dead-letter entry, decoded for display; ``payload`` is the producer's text, unchanged."""

    id: str
    payload: str
    error: dict[str, Any]

    @classmethod
    def from_raw(cls, raw_id: Any, fields: dict[Any, Any]) -> DeadEntry:
        decoded = {as_text(k): v for k, v in fields.items()}
        try:
            error = boundedjson.loads(decoded.get("error", b"{}"), max_bytes=READ_MAX_BYTES, what="error")
        except boundedjson.UnreadableJson:
            error = {"class": "unknown", "description": as_text(decoded.get("error", b""))}
        return cls(
            as_text(raw_id), as_text(decoded.get("payload", b"")), error if isinstance(error, dict) else {}
        )

    @property
    def error_class(self) -> str:
        return str(self.error.get("class") or "unknown")

    @property
    def operation(self) -> dict[str, Any]:
        """The payload as a JSON object, or ``{}`` when it is not one (poison: maybe nested too deeply for
        ``json``, so read within the same limits as the worker's)."""
        try:
            data = boundedjson.loads(self.payload, max_bytes=READ_MAX_BYTES)
        except boundedjson.UnreadableJson:
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def key(self) -> str:
        op = self.operation
        return f"{op.get('entity', '?')}:{op.get('key', '?')}" if op else "?"

    def has_key(self, wanted: str) -> bool:
        """``deal:order-42`` matches that entity's key; a bare ``order-42`` matches it in any entity."""
        op = self.operation
        return bool(op) and (self.key == wanted or str(op.get("key")) == wanted)

    @property
    def history(self) -> list[dict[str, Any]]:
        value = self.error.get("history")
        return [h for h in value if isinstance(h, dict)] if isinstance(value, list) else []

    def summary(self) -> dict[str, Any]:
        op = self.operation
        return {
            "id": self.id,
            "key": self.key,
            "op": op.get("op"),
            "class": self.error_class,
            "description": self.error.get("description"),
            "attempts": self.error.get("attempts"),
            "dead_lettered_at": self.error.get("dead_lettered_at"),
        }

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "payload": self.operation or self.payload, "error": self.error}


@dataclass(slots=True)
class ReplayReport:
    dry_run: bool
    selected: list[DeadEntry]
    replayed: list[tuple[str, str]] = field(default_factory=list)  # (dead-letter id, new stream id)
    missing: list[str] = field(default_factory=list)  # gone before we got to them
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, why): would roll its key back

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "selected": len(self.selected),
            "replayed": [{"dead_id": d, "stream_id": s} for d, s in self.replayed],
            "missing": self.missing,
            "skipped": [{"dead_id": d, "reason": r} for d, r in self.skipped],
            "would_replay": [e.summary() for e in self.selected] if self.dry_run else [],
        }


@dataclass(frozen=True, slots=True)
class ClassCounts:
    counts: dict[str, int]
    scanned: int
    size: int

    @property
    def truncated(self) -> bool:
        return self.scanned < self.size


class DeadLetters:
    """Operator access to one dead-letter stream. Redis failures raise StoreError."""

    def __init__(self, client: RedisClient, keys: StreamKeys) -> None:
        self.client = client
        self.keys = keys
        self._replay = register(client, "replay")

    async def size(self) -> int:
        with translated("dead-letter read"):
            return int(await self.client.xlen(self.keys.dead))

    async def iterate(
        self, *, newest: bool = False, error_class: str | None = None, key: str | None = None
    ) -> AsyncIterator[DeadEntry]:
        """Every entry, a page at a time (oldest first unless ``newest``), optionally of one class or key."""
        bound = "+" if newest else "-"
        while True:
            with translated("dead-letter read"):
                if newest:
                    rows = stream_rows(
                        await self.client.xrevrange(self.keys.dead, max=bound, min="-", count=PAGE)
                    )
                else:
                    rows = stream_rows(
                        await self.client.xrange(self.keys.dead, min=bound, max="+", count=PAGE)
                    )
            for raw_id, fields in rows:
                entry = DeadEntry.from_raw(raw_id, fields)
                if (error_class is None or entry.error_class == error_class) and (
                    key is None or entry.has_key(key)
                ):
                    yield entry
            if len(rows) < PAGE:
                return
            bound = "(" + as_text(rows[-1][0])

    async def entries(
        self, *, newest: bool = True, error_class: str | None = None, limit: int = 50, key: str | None = None
    ) -> list[DeadEntry]:
        found: list[DeadEntry] = []
        if limit <= 0:
            return found
        async for entry in self.iterate(newest=newest, error_class=error_class, key=key):
            found.append(entry)
            if len(found) >= limit:
                break
        return found

    async def get(self, entry_id: str) -> DeadEntry | None:
        with translated("dead-letter read"):
            rows = stream_rows(await self.client.xrange(self.keys.dead, min=entry_id, max=entry_id))
        return DeadEntry.from_raw(*rows[0]) if rows else None

    async def select(
        self, *, ids: Sequence[str] = (), error_class: str | None = None, everything: bool = False
    ) -> tuple[list[DeadEntry], list[str]]:
        """Entries chosen by id, by class or all, oldest first; plus the ids that were not found."""
        if ids:
            chosen: list[DeadEntry] = []
            missing: list[str] = []
            for entry_id in dict.fromkeys(ids):
                entry = await self.get(entry_id)
                if entry is None:
                    missing.append(entry_id)
                else:
                    chosen.append(entry)
            chosen.sort(key=lambda e: tuple(int(p) for p in e.id.split("-")))
            return chosen, missing
        if error_class is None and not everything:
            return [], []
        return [e async for e in self.iterate(error_class=error_class)], []

    async def replay(
        self,
        entries: Iterable[DeadEntry],
        *,
        rate_per_s: float = 50.0,
        dry_run: bool = False,
        sleep: Sleep = asyncio.sleep,
    ) -> ReplayReport:
        """Re-enqueue entries at most ``rate_per_s`` per second; each move is one atomic script."""
        report = ReplayReport(dry_run, list(entries))
        if dry_run:
            return report
        interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        started = time.monotonic()
        for i, entry in enumerate(report.selected):
            wait = started + i * interval - time.monotonic()
            if wait > 0:
                await sleep(wait)
            history = json.dumps(entry.history, separators=(",", ":"))
            with translated(f"replay of {entry.id}"):
                new_id = await self._replay(
                    keys=[self.keys.dead, self.keys.stream, self.keys.own], args=[entry.id, history]
                )
            if new_id is None:
                report.missing.append(entry.id)
            else:
                report.replayed.append((entry.id, as_text(new_id)))
        return report

    async def replay_edited(self, entry: DeadEntry, payload: str, *, by: str = "operator") -> str | None:
        """Put one entry back with a corrected payload; the original payload goes into its history.

        The new payload must be a valid operation (``decode_payload``; ``PoisonMessage`` otherwise), so an
        edit cannot turn a dead letter into poison. Returns the new stream id, or None if the entry is gone.
        """
        decode_payload(payload)
        edit = {
            "kind": "edited",
            "by": by,
            "original_payload": entry.payload,
            "at_ms": int(time.time() * 1000),
        }
        history = json.dumps([*entry.history, edit], separators=(",", ":"))
        with translated(f"replay of {entry.id}"):
            new_id = await self._replay(
                keys=[self.keys.dead, self.keys.stream, self.keys.own], args=[entry.id, history, payload]
            )
        return None if new_id is None else as_text(new_id)

    async def purge(self, entries: Iterable[DeadEntry]) -> int:
        """Delete exactly the given entries (never ones added after they were selected)."""
        ids = [e.id for e in entries]
        deleted = 0
        with translated("dead-letter purge"):
            for start in range(0, len(ids), PAGE):
                deleted += int(await self.client.xdel(self.keys.dead, *ids[start : start + PAGE]))
        return deleted

    async def count_by_class(self, cap: int = SCAN_CAP) -> ClassCounts:
        """Entries per error class over the newest ``cap`` entries (``truncated`` says if that was all)."""
        counts: Counter[str] = Counter()
        scanned = 0
        async for entry in self.iterate(newest=True):
            if scanned >= cap:
                break
            counts[entry.error_class] += 1
            scanned += 1
        return ClassCounts(dict(counts.most_common()), scanned, await self.size())
