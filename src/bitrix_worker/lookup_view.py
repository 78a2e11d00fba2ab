"""Pure renderer: a ``KeyReport`` -> rich tables for ``bitrix-worker lookup`` (no I/O here)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .keylookup import KeyReport


def _when(at_ms: Any) -> str:
    if not isinstance(at_ms, int):
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at_ms / 1000))
    return f"{stamp} UTC"


def _capped(what: str, scanned: int, truncated: bool) -> str:
    return f" (only the {scanned} {what} scanned)" if truncated else ""


def lookup_view(r: KeyReport) -> RenderableType:
    head = Table(box=None, show_header=False, title=f"{r.ident}", title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    if r.mapping_error:
        mapping = f"unknown ({r.mapping_error})"
    elif r.state is None:
        mapping = "not in the mapping store (never created by this worker)"
    else:
        mapping = f"{r.state}, last applied version {r.version if r.version is not None else '-'}"
    head.add_row(
        "Bitrix24 id", escape(str(r.bitrix_id or "-")) + (f"  {r.portal_link}" if r.portal_link else "")
    )
    head.add_row("mapping", escape(mapping))
    if r.matched_id:
        head.add_row("found by stream id", escape(r.matched_id))
    parts: list[RenderableType] = [head, Text("")]

    outcomes = Table("stream id", "op", "outcome", "reason", "class", "attempts", "bitrix id", "at")
    for o in r.outcomes:
        cells = [o.stream_id, o.op, o.outcome, o.reason, o.error_class or "-", str(o.attempts or 0)]
        outcomes.add_row(*map(escape, [*cells, str(o.bitrix_id or "-"), _when(o.at_ms)]))
    note = _capped("newest outcomes", r.outcomes_scanned, r.outcomes_truncated)
    outcomes.title = "outcomes, newest first" + note
    parts.append(outcomes if r.outcomes else Text("outcomes: none recorded" + note))

    waiting = Table("where", "stream id", "op", "version", "attempts", "detail", title="not finished yet")
    for w in r.waiting:
        detail = w.consumer or (f"due {_when(w.due_at_ms)}" if w.due_at_ms else "")
        if w.waits_for:
            detail = "waiting for " + ", ".join(w.waits_for)
        waiting.add_row(
            *map(escape, [w.where, w.stream_id, w.op or "?", str(w.version or "-"), str(w.attempts), detail])
        )
    parts.append(waiting if r.waiting else Text("not finished yet: nothing"))
    if r.waited_by:
        parts.append(Text("operations of other keys waiting for this key's: " + ", ".join(r.waited_by)))
    if r.stream_truncated:
        parts.append(Text(f"(the stream was scanned only up to its {r.stream_scanned} oldest entries)"))

    dead = Table("dead-letter id", "op", "class", "attempts", "description", title="dead letters")
    for e in r.dead_letters:
        s = e.summary()
        dead.add_row(
            *map(escape, [e.id, str(s["op"]), e.error_class, str(s["attempts"]), str(s["description"])])
        )
    note = _capped("newest dead letters", r.dead_scanned, r.dead_truncated)
    parts.append(dead if r.dead_letters else Text("dead letters: none" + note))
    return Group(*parts)
