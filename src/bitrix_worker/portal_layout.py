"""Pure: where each portal's work lives (stream, dead-letter stream, mapping table) and which worker process
serves which portal.

One stream per portal, ``<stream>:<portal>``: its keys are ``{<stream>:<portal>}:...`` (``StreamKeys``), so
each portal's queue, schedule, turns, limiter, pauses, breaker and schema cache sit in their own Redis Cluster
slot, and a million entries queued for one portal are never read past by the others' workers. The default
portal keeps the configured names unchanged, so a single-portal deployment changes nothing.

Portals are divided among the live worker processes by rendezvous (highest-random-weight) hashing: every
process computes the same owner for a portal from the same list of live processes, with no coordination,
and when a process comes or goes only the portals it owned or will own move (about 1/n of them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = ["assigned", "owner", "portal_dead_stream", "portal_stream", "portal_table"]

_TABLE_SAFE = re.compile(r"[^A-Za-z0-9_]")
_TABLE_MAX = 63  # PostgreSQL's identifier limit


def portal_stream(stream: str, portal: str | None, default: str | None) -> str:
    """The stream of ``portal``; the default portal (or None) keeps ``stream`` itself."""
    return stream if portal is None or portal == default else f"{stream}:{portal}"


def portal_dead_stream(stream: str, dead: str, portal: str | None, default: str | None) -> str:
    """The dead-letter stream of ``portal``. A dead stream under the stream's hash tag (``{S}:dead``, the
    Redis Cluster layout) moves under the portal stream's tag (``{S:P}:dead``), so it stays in its slot."""
    if portal is None or portal == default:
        return dead
    tag = "{" + stream + "}"
    if dead.startswith(tag):
        return "{" + f"{stream}:{portal}" + "}" + dead[len(tag) :]
    return f"{dead}:{portal}"


def portal_table(table: str, portal: str | None, default: str | None) -> str:
    """The mapping table of ``portal``: ``<table>__<portal>`` (characters a SQL name cannot hold become
    ``_``, and a short hash keeps two such ids apart); the default portal keeps ``table`` (no migration)."""
    if portal is None or portal == default:
        return table
    safe = _TABLE_SAFE.sub("_", portal)
    if safe != portal or len(table) + 2 + len(safe) > _TABLE_MAX:
        digest = hashlib.blake2b(portal.encode(), digest_size=4).hexdigest()
        safe = f"{safe[: _TABLE_MAX - len(table) - 11]}_{digest}"
    return f"{table}__{safe}"


def _weight(worker: str, portal: str) -> int:
    raw = hashlib.blake2b(f"{worker}\x00{portal}".encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big")


def owner(portal: str, workers: Iterable[str]) -> str | None:
    """The live worker that serves ``portal`` (highest weight; ties broken by name), None without workers."""
    best: tuple[int, str] | None = None
    for w in workers:
        candidate = (_weight(w, portal), w)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]


def assigned(portals: Iterable[str], workers: Iterable[str], me: str) -> list[str]:
    """The portals ``me`` serves among ``workers`` (``me`` counts as live even before its first beat)."""
    live = sorted({*workers, me})
    return sorted(p for p in portals if owner(p, live) == me)
