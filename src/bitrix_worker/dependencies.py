"""Which dead letter an unresolved reference waits for: the entry of its target key's failed create.

An operation whose ``{"$ref": "contact:customer-7"}`` has no Bitrix24 id is dead-lettered naming the
reference; when the target's own create was dead-lettered, the reason also names that entry's id, so an
operator replays the two in the right order (the target first). Finding it is best effort and bounded:
one ``scan.lua`` pass over the newest ``SCAN`` entries of the dead-letter stream, filtered inside Redis on
the key's text (``redis/search``); an older entry is not named, and the reason says it was not found
among those. A Redis failure here costs the id, never the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import structlog

from .errors import StoreError
from .outcomes import Outcome, Result
from .plan import Plan
from .reasons import Reason
from .redis.deadletter import DeadEntry
from .redis.search import Scan, StreamSearch
from .refs import Ref
from .units import WorkUnit

SCAN = 2000
"""Newest dead-letter entries searched for one batch's unresolved references (one scan.lua call)."""


async def unresolved_results(
    units: Sequence[tuple[WorkUnit, Plan]], client: Any, dead_key: str
) -> list[Result]:
    """The dead-letter results of units whose plan met an unresolved reference, naming it."""
    results = [
        (Result(u, Outcome.DEAD, Reason.REF_UNRESOLVED, plan.detail, stale=plan.stale), plan.unresolved)
        for u, plan in units
        if plan.unresolved is not None
    ]
    await name_dead_letters(results, client, dead_key)
    return [r for r, _ in results]


async def name_dead_letters(results: Sequence[tuple[Result, Ref]], client: Any, dead_key: str) -> None:
    """Append to each result's reason the dead-letter id of its reference's failed create, if found."""
    waiting = [(r, ref) for r, ref in results if "dead-lettered" in r.detail]
    if not waiting:
        return
    wanted = {ref.pair for _, ref in waiting}
    found: dict[tuple[str, str], str] = {}
    try:
        search, scan = StreamSearch(client), Scan()
        needles = [("payload", b"has:" + _needle(key)) for _, key in wanted]
        async for raw_id, raw in search.matches(dead_key, needles, scan, newest=True, cap=SCAN):
            op = DeadEntry.from_raw(raw_id, raw).operation
            pair = (op.get("entity"), op.get("key"))
            if pair in wanted and pair not in found and op.get("op") in ("create", "upsert"):
                found[(str(pair[0]), str(pair[1]))] = raw_id
    except StoreError as exc:
        structlog.get_logger("bitrix_worker.dependencies").warning(
            "could not search the dead letters of unresolved references", error=str(exc)
        )
        return
    for r, ref in waiting:
        entry = found.get(ref.pair)
        r.detail += f" (dead letter {entry})" if entry else f" (not among the newest {SCAN} dead letters)"


def _needle(key: str) -> bytes:
    """The key as it appears inside JSON text (the pre-filter Redis runs)."""
    return json.dumps(key, ensure_ascii=False)[1:-1].encode()
