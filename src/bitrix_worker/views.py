"""Pure renderers: status and dead-letter data -> rich tables for the CLI and the demo (no I/O here)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .redis.deadletter import DeadEntry, ReplayReport
from .status import Status

DESCRIPTION_CHARS = 70


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _short(text: Any, n: int = DESCRIPTION_CHARS) -> str:
    value = "" if text is None else str(text)
    return value if len(value) <= n else value[: n - 1] + "…"


def _since_ms(at_ms: Any) -> str:
    if not isinstance(at_ms, int | float):
        return "-"
    return _age(max(0.0, time.time() - at_ms / 1000)) + " ago"


def status_view(s: Status) -> RenderableType:
    q = s.queue
    main = Table(
        title=f"stream {s.stream} (group {s.group})", box=None, show_header=False, title_justify="left"
    )
    main.add_column(style="bold")
    main.add_column()

    def row(name: str, value: str) -> None:
        main.add_row(escape(name), escape(value))

    row("stream length", f"{q.stream_length} (unread + pending)")
    pending = ", ".join(f"{c}: {n}" for c, n in q.pending_by_consumer.items()) or "-"
    row("pending", f"{q.pending}  ({pending})" if q.group_exists else "no consumer group yet")
    row("oldest pending", _age(q.oldest_pending_age_s))
    row("lag (oldest entry)", _age(q.lag_s))
    next_due = "-" if q.next_due_in_s is None else f"next due in {_age(max(0.0, q.next_due_in_s))}"
    row("scheduled retries", f"{q.scheduled}  ({next_due})")
    row("waiting for a referenced key", str(q.waiting_for_refs))
    dead = ", ".join(f"{c}: {n}" for c, n in s.dead_letter_by_class.items()) or "-"
    capped = (
        f" (newest {s.dead_letter_scanned} scanned)" if s.dead_letter_scanned < q.dead_letter_size else ""
    )
    row(f"dead letters ({s.dead_stream})", f"{q.dead_letter_size}  ({dead}){capped}")
    if s.portal is None:
        row("portal", "unknown (set BITRIX_WEBHOOK_URL to see breaker and limiter)")
    else:
        b = s.breaker or {}
        breaker = gate_line(b)
        row("portal", s.portal)
        row("breaker", f"{breaker}, trips {b.get('trips', 0)}")
        lim = s.limiter or {}
        row("limiter", f"rate factor {lim.get('factor')}, booked ahead {lim.get('backlog_s')} s")
    row("mapping store", ", ".join(f"{k}: {v}" for k, v in s.mapping.items()))
    parts: list[RenderableType] = [main, Text("")]
    if s.workers:
        workers = Table("consumer", "last seen", "live", title="workers", title_justify="left", box=None)
        for w in s.workers:
            workers.add_row(escape(w["consumer"]), f"{w['last_seen_s']} s ago", "yes" if w["live"] else "no")
        parts += [workers, Text("")]
    else:
        parts.append(Text("workers: none has reported yet"))
    if s.counters:
        counters = Table("counter", "value", title="lifetime counters", title_justify="left", box=None)
        for name, value in s.counters.items():
            counters.add_row(escape(name), str(value))
        parts.append(counters)
    else:
        parts.append(Text("lifetime counters: none yet"))
    return Group(*parts)


def dead_table(entries: Iterable[DeadEntry], title: str = "dead letters") -> RenderableType:
    """Two lines per entry, no table: at any terminal width the id (``dlq show/replay`` need it whole) and
    the key come first on their line and are never cut; the description wraps below, indented."""
    parts: list[RenderableType] = [Text(title, style="bold")]
    for e in entries:
        s = e.summary()
        tries = s["attempts"] if s["attempts"] is not None else "?"
        parts.append(
            Text.assemble((e.id, "bold"), "  ", (e.error_class, "red"), f"  {s['op'] or '?'} {e.key}")
        )
        meta = (f"{tries} attempts, {_since_ms(s['dead_lettered_at'])}: ", "dim")
        parts.append(Padding(Text.assemble(meta, _short(s["description"], 300)), (0, 0, 0, 4)))
    return Group(*parts)


def dead_entry_view(e: DeadEntry) -> tuple[RenderableType, RenderableType]:
    """(head, history); the payload is not in the head table: printed apart, unwrapped, it copies whole."""
    head = Table(box=None, show_header=False)
    head.add_column(style="bold")
    head.add_column()
    for name, value in [
        ("id", e.id),
        ("key", e.key),
        ("class", e.error_class),
        ("description", e.error.get("description")),
        ("reason", e.error.get("reason")),
        ("attempts", e.error.get("attempts")),
        ("original stream id", e.error.get("stream_id")),
        ("dead-lettered", _since_ms(e.error.get("dead_lettered_at"))),
    ]:
        head.add_row(name, escape(str(value)))
    history = Table(
        "#", "kind", "class", "execution", "http", "code", "method", "description", title="history"
    )
    for h in e.history:
        history.add_row(
            *map(escape, _history_cells(h)),
        )
    return head, history


def _history_cells(h: dict[str, Any]) -> list[str]:
    return [
        str(h.get("attempt", "")),
        str(h.get("kind", "")),
        str(h.get("class", "")),
        str(h.get("execution", "")),
        str(h.get("http_status") or ""),
        str(h.get("bitrix_code") or ""),
        str(h.get("method", "")),
        _short(h.get("description"), 50),
    ]


def replay_view(r: ReplayReport) -> RenderableType:
    skipped = [Text(f"skipped {d}: {why} (--force replays it anyway)") for d, why in r.skipped]
    if r.dry_run:
        return Group(
            Text(f"dry run: would replay {len(r.selected)} entries (nothing changed)"),
            dead_table(r.selected, title="would replay"),
            *skipped,
        )
    line = f"replayed {len(r.replayed)} of {len(r.selected) + len(r.skipped)} entries"
    if r.missing:
        line += f"; {len(r.missing)} were already gone: {', '.join(r.missing[:10])}"
    return Group(Text(line), *skipped)


def gate_line(b: dict[str, Any]) -> str:
    """The portal gate in words: why it is paused and until when, in local time and from now."""
    if not b.get("open"):
        return "open (consuming)"
    reason = b.get("reason") or "no reason given"
    if b.get("manual"):
        return f"PAUSED by an operator: {reason} (until `bitrix-worker portal resume`)"
    until = float(b.get("until") or 0)
    left = max(0.0, until - time.time())
    at = datetime.fromtimestamp(until).strftime("%H:%M:%S") if until else "?"
    return f"PAUSED: {reason}; next probe at {at} (in {left:.0f} s)"
