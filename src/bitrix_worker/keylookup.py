"""Read one key's story back: its Bitrix24 id, what happened to each of its operations, what still waits.

This answers the operator's "order 42 is not in the CRM" from the places the worker already writes:

* the mapping store: Bitrix24 id, state (active / deleted / unknown) and the last applied version;
* the capped outcomes stream: every final outcome (applied / skipped / dead-lettered) with its reason;
* the operation stream (unread or pending on a consumer), the retry schedule and the key's parked list:
  what has not finished yet, and which referenced keys (``{"$ref": ...}``) an operation still waits for;
* the dead-letter stream: the key's dead letters with their error history.

Reads only. The streams can be large (a million-entry backlog, a hundred thousand dead letters), so every
scan is newest-first (the stream: oldest-first, the order it is delivered in) with a cap, and the report
says when a scan stopped before the end. A raw-bytes pre-filter skips entries that cannot be the key before
any JSON is decoded, which is what keeps a capped scan cheap.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .config import Settings
from .errors import BitrixWorkerError, StoreError
from .mapping import MappingStore
from .redis.connection import RedisClient
from .redis.deadletter import DeadEntry, parse_id
from .redis.search import Scan, StreamSearch
from .refs import split_ident
from .values import as_text

__all__ = ["KeyReport", "OutcomeRecord", "WaitingOp", "find_stream_id", "lookup", "lookup_sync"]

SCAN_CAP = 100_000
"""Entries each scan (outcomes, stream, dead letters) reads at most (the outcomes stream's default length)."""
PARKED_CAP = 1000

Where = Literal["stream", "pending", "scheduled", "waiting", "parked"]
"""``waiting``: it is the key's turn, but the operation refers to a key whose earlier operations are not
final yet (``waits_for``); ``parked`` operations may wait for such keys too."""


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """One final outcome from the outcomes stream (the worker's audit trail)."""

    stream_id: str
    op: str
    outcome: str
    reason: str
    attempts: int | None
    at_ms: int | None
    error_class: str | None
    bitrix_id: int | None

    @classmethod
    def from_fields(cls, f: dict[str, str]) -> OutcomeRecord:
        return cls(
            stream_id=f.get("stream_id", ""),
            op=f.get("op", ""),
            outcome=f.get("outcome", ""),
            reason=f.get("reason", ""),
            attempts=_int(f.get("attempts")),
            at_ms=_int(f.get("at_ms")),
            error_class=f.get("class"),
            bitrix_id=_int(f.get("bitrix_id")),
        )


@dataclass(frozen=True, slots=True)
class WaitingOp:
    """An operation of the key that has not finished: where it is and what it carries."""

    where: Where
    stream_id: str
    op: str | None
    version: int | None
    consumer: str | None = None  # pending: the consumer working on it
    due_at_ms: int | None = None  # scheduled: when it is retried
    history: list[dict[str, Any]] = field(default_factory=list)
    waits_for: list[str] = field(default_factory=list)  # referenced keys (entity:key) it still waits for

    @property
    def attempts(self) -> int:
        return sum(1 for h in self.history if h.get("kind") == "attempt")


@dataclass(slots=True)
class KeyReport:
    entity: str
    key: str
    bitrix_id: int | None = None
    state: str | None = None  # None: the mapping store has no row for the key
    version: int | None = None
    mapping_error: str | None = None
    portal_link: str | None = None
    outcomes: list[OutcomeRecord] = field(default_factory=list)
    outcomes_scanned: int = 0
    outcomes_truncated: bool = False
    waiting: list[WaitingOp] = field(default_factory=list)
    waited_by: list[str] = field(default_factory=list)  # "entity:key stream-id" of referrers waiting for it
    stream_scanned: int = 0
    stream_truncated: bool = False
    dead_letters: list[DeadEntry] = field(default_factory=list)
    dead_scanned: int = 0
    dead_truncated: bool = False
    matched_id: str | None = None  # the stream id searched for, when the key was found by id

    @property
    def ident(self) -> str:
        return f"{self.entity}:{self.key}"

    @property
    def found(self) -> bool:
        return bool(self.state or self.outcomes or self.waiting or self.dead_letters)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dead_letters"] = [e.as_json() for e in self.dead_letters]
        data["ident"] = self.ident
        return data


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in raw.items()}


def _payload_op(payload: str) -> tuple[str | None, str | None, str | None, int | None]:
    """(entity, key, op, version) of a payload, each None when unreadable."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None, None, None, None
    if not isinstance(data, dict):
        return None, None, None, None

    def text(name: str) -> str | None:
        value = data.get(name)
        return value if isinstance(value, str) else None

    version = data.get("version")
    return text("entity"), text("key"), text("op"), version if isinstance(version, int) else None


def _needle(key: str) -> bytes:
    """The key as it appears inside JSON text (a cheap pre-filter before decoding)."""
    return json.dumps(key, ensure_ascii=False)[1:-1].encode()


def portal_link(settings: Settings, entity: str, bitrix_id: int | None) -> str | None:
    """The entity's page in the portal (scheme and host of the webhook only: never its secret path)."""
    if bitrix_id is None or settings.webhook_url is None:
        return None
    try:
        parts = urlsplit(settings.webhook.reveal())
    except BitrixWorkerError:
        return None
    return f"{parts.scheme}://{parts.netloc}/crm/{entity}/details/{bitrix_id}/"


async def _mapping(report: KeyReport, settings: Settings, store: MappingStore | None) -> None:
    url = settings.database_url
    if store is None and url.startswith("sqlite") and ":///" in url:
        path = url.split(":///", 1)[1]
        if path and path != ":memory:" and not Path(path).exists():  # noqa: ASYNC240 - one stat call
            report.mapping_error = f"mapping store {path} does not exist yet"
            return
    own = store is None
    try:
        if store is None:
            store = await MappingStore.connect(url)
        row = await store.get(report.entity, report.key)
    except StoreError as exc:
        report.mapping_error = str(exc)
        return
    finally:
        if own and store is not None:
            await store.close()
    if row is not None:
        report.bitrix_id, report.state, report.version = row.bitrix_id, row.state, row.version


async def _outcomes(search: StreamSearch, report: KeyReport, outcomes_key: str, cap: int) -> None:
    ident, scan = report.ident.encode(), Scan()
    async for _, raw in search.matches(outcomes_key, [("ident", b"eq:" + ident)], scan, newest=True, cap=cap):
        if raw.get(b"ident") == ident:
            report.outcomes.append(OutcomeRecord.from_fields(_fields(raw)))
    report.outcomes_scanned, report.outcomes_truncated = scan.scanned, scan.truncated


def _unit_ops(unit_json: str, where: Where, ident: str, due_at_ms: int | None = None) -> list[WaitingOp]:
    """The members of a retry unit (held in the stream or in the schedule) as waiting operations."""
    try:
        unit = json.loads(unit_json)
        if unit.get("ident") != ident:
            return []
        history = [h for h in unit.get("history") or [] if isinstance(h, dict)]
        ops = []
        for m in unit["members"]:
            _, _, op, version = _payload_op(m["payload"])
            ops.append(WaitingOp(where, m["origin"], op, version, due_at_ms=due_at_ms, history=history))
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    return ops


def _stream_entry_ops(
    raw_id: str, raw: dict[bytes, bytes], report: KeyReport, needle: bytes
) -> list[WaitingOp]:
    if b"unit" in raw:
        if raw.get(b"ident") != report.ident.encode():
            return []
        return _unit_ops(as_text(raw[b"unit"]), "stream", report.ident)
    payload = raw.get(b"payload", b"")
    if needle not in payload:
        return []
    entity, key, op, version = _payload_op(as_text(payload))
    if (entity, key) != (report.entity, report.key):
        return []
    return [WaitingOp("stream", raw_id, op, version, history=_history(raw.get(b"history")))]


def _history(raw: Any) -> list[dict[str, Any]]:
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [h for h in value if isinstance(h, dict)] if isinstance(value, list) else []


async def _stream(search: StreamSearch, report: KeyReport, settings: Settings, cap: int) -> None:
    """The key's entries in the stream (oldest first: the delivery order), then which are pending."""
    keys, needle, scan = settings.keys, _needle(report.key), Scan()
    found: list[WaitingOp] = []
    filters = [("payload", b"has:" + needle), ("ident", b"eq:" + report.ident.encode())]
    async for raw_id, raw in search.matches(keys.stream, filters, scan, newest=False, cap=cap):
        found += _stream_entry_ops(raw_id, raw, report, needle)
    report.stream_scanned, report.stream_truncated = scan.scanned, scan.truncated
    for w in found:
        consumer = await search.pending_consumer(keys.stream, settings.group, w.stream_id)
        if consumer is not None:
            w = WaitingOp("pending", w.stream_id, w.op, w.version, consumer, history=w.history)  # noqa: PLW2901
        report.waiting.append(w)


async def _scheduled_and_parked(search: StreamSearch, report: KeyReport, settings: Settings) -> None:
    """Retries in the schedule, then the operations parked behind them (in their turn's order)."""
    for _origin, unit, due in await search.scheduled(settings.keys, report.ident):
        report.waiting += _unit_ops(unit, "scheduled", report.ident, due)
    items = [_parked_item(raw) for raw in await search.parked(settings.keys, report.ident, PARKED_CAP)]
    report.waited_by = [f"{i['d']} {i['t']}" for i in items if "t" in i and "d" in i]
    ops = [i for i in items if "f" in i and "id" in i]
    holder, counts = await search.ref_waits(settings.keys, report.ident, [str(i["id"]) for i in ops])
    if holder is not None:
        report.waiting += _parked_ops([_parked_item(holder)], "waiting", [1])
    report.waiting += _parked_ops(ops, "parked", counts)


def _parked_item(raw: str) -> dict[str, Any]:
    try:
        item = json.loads(raw)
    except ValueError:
        return {}
    return item if isinstance(item, dict) else {}


def _parked_ops(items: list[dict[str, Any]], where: Where, waits: list[int]) -> list[WaitingOp]:
    """Parked items as waiting operations; ``waits``: how many referenced keys each still waits for."""
    found = []
    for item, left in zip(items, waits, strict=True):
        try:
            flat = item["f"]
            f = {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}
        except (KeyError, TypeError, IndexError):
            continue
        _, _, op, version = _payload_op(f.get("payload", ""))
        refs = [str(r) for r in item.get("w") or []] if left > 0 else []
        history = _history(f.get("history"))
        found.append(WaitingOp(where, str(item["id"]), op, version, history=history, waits_for=refs))
    return found


async def _dead(search: StreamSearch, report: KeyReport, dead_key: str, cap: int) -> None:
    needle, scan = _needle(report.key), Scan()
    async for raw_id, raw in search.matches(
        dead_key, [("payload", b"has:" + needle)], scan, newest=True, cap=cap
    ):
        if needle in raw.get(b"payload", b""):
            entry = DeadEntry.from_raw(raw_id, raw)
            op = entry.operation
            if (op.get("entity"), op.get("key")) == (report.entity, report.key):
                report.dead_letters.append(entry)
    report.dead_scanned, report.dead_truncated = scan.scanned, scan.truncated


async def lookup(
    redis: RedisClient,
    settings: Settings,
    entity: str,
    key: str,
    *,
    store: MappingStore | None = None,
    scan_cap: int = SCAN_CAP,
) -> KeyReport:
    """Everything known about ``entity:key``. ``store``: an open mapping store to reuse (else one is opened
    for this call; a missing SQLite file is reported, never created). Redis failures raise StoreError."""
    report, later = KeyReport(entity, key), KeyReport(entity, key)
    search = StreamSearch(redis)
    # Independent reads, run together so Redis works on one while Python parses another; the waiting
    # operations are collected apart and joined in their order (stream, then schedule and parked).
    await asyncio.gather(
        _mapping(report, settings, store),
        _outcomes(search, report, settings.keys.outcomes, scan_cap),
        _stream(search, report, settings, scan_cap),
        _scheduled_and_parked(search, later, settings),
        _dead(search, report, settings.dead_stream, scan_cap),
    )
    report.waiting += later.waiting
    report.waited_by = later.waited_by
    report.portal_link = portal_link(settings, entity, report.bitrix_id)
    return report


async def find_stream_id(
    redis: RedisClient, settings: Settings, raw_id: str, *, scan_cap: int = SCAN_CAP
) -> tuple[str, str] | None:
    """(entity, key) of the operation a stream id names: an entry of the stream, a scheduled retry, a
    dead-letter entry, or the original id recorded in an outcome or a dead letter. None when not found."""
    stream_id = parse_id(raw_id)
    search = StreamSearch(redis)
    for name in (settings.stream, settings.dead_stream):
        raw = await search.entry(name, stream_id)
        if raw is None:
            continue
        if b"unit" in raw:
            return _split(as_text(raw.get(b"ident", b"")))
        entity, key, _, _ = _payload_op(as_text(raw.get(b"payload", b"")))
        if entity and key:
            return entity, key
    unit = await search.schedule_unit(settings.keys, stream_id)
    if unit is not None:
        try:
            return _split(str(json.loads(unit).get("ident", "")))
        except (ValueError, AttributeError):
            return None
    return await _scan_for_id(search, settings, stream_id, scan_cap)


async def _scan_for_id(
    search: StreamSearch, settings: Settings, stream_id: str, cap: int
) -> tuple[str, str] | None:
    """An operation's outcome and its dead letter were both written after it was enqueued, so each stream
    is read forward from the id's own time: the match is near the start of the scan, not a cap away."""
    needle, start = stream_id.encode(), f"{stream_id.split('-', 1)[0]}-0"
    for name, field_name in ((settings.keys.outcomes, b"stream_id"), (settings.dead_stream, b"error")):
        check = b"eq:" if field_name == b"stream_id" else b"has:"
        filters = [(field_name.decode(), check + needle)]
        rows = search.matches(name, filters, Scan(), newest=False, cap=cap, start=start)
        async with aclosing(rows):
            async for raw_id, raw in rows:
                if field_name == b"stream_id" and raw.get(field_name) == needle:
                    return _split(as_text(raw.get(b"ident", b"")))
                if field_name == b"error" and needle in raw.get(field_name, b""):
                    entry = DeadEntry.from_raw(raw_id, raw)
                    if entry.error.get("stream_id") == stream_id and entry.operation:
                        return str(entry.operation.get("entity")), str(entry.operation.get("key"))
    return None


def _split(ident: str) -> tuple[str, str] | None:
    return split_ident(ident)


def lookup_sync(settings: Settings, entity: str, key: str, *, scan_cap: int = SCAN_CAP) -> KeyReport:
    """``lookup`` with its own Redis connection (and mapping store), for scripts and the REPL."""
    from .redis.connection import redis_connection

    async def go() -> KeyReport:
        async with redis_connection(settings.redis_url, name="bitrix-worker-lookup") as client:
            return await lookup(client, settings, entity, key, scan_cap=scan_cap)

    return asyncio.run(go())
