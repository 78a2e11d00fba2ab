"""Pure: where each portal's work lives (stream, dead-letter stream, mapping table) and which worker process
serves which portal.

One stream per portal, ``<stream>:<portal>``: its keys are ``{<stream>:<portal>}:...`` (``StreamKeys``), so
each portal's queue, schedule, turns, limiter, pauses, breaker and schema cache sit in their own Redis Cluster
slot, and a million entries queued for one portal are never read past by the others' workers. The default
portal keeps the configured names unchanged, so a single-portal deployment changes nothing.

Portals are divided among the live worker processes by rendezvous (highest-random-weight) hashing: every
process computes the same owner for a portal from the same list of live processes, with no coordination,
and when a process comes or goes only the portals it owned or will own move (about 1/n of them).

Placement is load-aware (``place``): a portal draining a backlog (``Backlog``: its claims came back full for
a while) is *busy*. Busy portals are spread over the processes first, by rendezvous with balanced counts;
the quiet ones then go, by rendezvous, only to the processes with the fewest busy portals (none, while
there are fewer busy portals than processes), so a hot portal's batches never share an event loop with the
lone operations of quiet portals while there are processes enough.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "Backlog",
    "assigned",
    "owner",
    "place",
    "portal_dead_stream",
    "portal_stream",
    "portal_table",
]

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


def place(portals: Iterable[str], workers: Iterable[str], busy: Iterable[str] = ()) -> dict[str, str]:
    """Portal -> the live worker that serves it. Busy portals first: each pair (portal, worker) in
    descending rendezvous weight, taken while the worker has room, room being the balanced share (every
    worker ends with ``len(busy) // n`` or one more). Then each quiet portal goes to its rendezvous owner
    among the workers holding the fewest busy portals. Deterministic: every process computes the same."""
    live = sorted(set(workers))
    if not live:
        return {}
    every = sorted(set(portals))
    hot = sorted(set(busy).intersection(every))
    counts = dict.fromkeys(live, 0)
    out = _spread(hot, live, counts)
    fewest = min(counts.values())
    free = [w for w in live if counts[w] == fewest]
    for p in every:
        if p not in out:
            out[p] = owner(p, free) or live[0]
    return out


def _spread(hot: list[str], live: list[str], counts: dict[str, int]) -> dict[str, str]:
    """Busy portals over ``live``, balanced: ``counts`` end at ``floor`` or ``floor + 1`` each."""
    floor, extra = divmod(len(hot), len(live))
    pairs = sorted(((_weight(w, p), w, p) for p in hot for w in live), reverse=True)
    out: dict[str, str] = {}
    for _, w, p in pairs:
        if p in out or counts[w] > floor or (counts[w] == floor and extra == 0):
            continue
        if counts[w] == floor:
            extra -= 1
        counts[w] += 1
        out[p] = w
    return out


def assigned(portals: Iterable[str], workers: Iterable[str], me: str, busy: Iterable[str] = ()) -> list[str]:
    """The portals ``me`` serves among ``workers`` (``me`` counts as live even before its first beat)."""
    placed = place(portals, {*workers, me}, busy)
    return sorted(p for p, w in placed.items() if w == me)


@dataclass
class Backlog:
    """Whether one portal is busy, with hysteresis: busy once its claims have come back full (a backlog)
    for ``busy_after_s`` without a short one between; quiet again after ``quiet_after_s`` without a full
    claim. ``now`` is any monotonic clock in seconds."""

    busy_after_s: float
    quiet_after_s: float
    busy: bool = False
    full_since: float | None = None
    last_full: float | None = None

    def claimed(self, full: bool, now: float) -> None:
        """One claim came back: ``full`` when it held a whole batch."""
        if not full:
            self.full_since = None
            return
        if self.full_since is None:
            self.full_since = now
        self.last_full = now
        if now - self.full_since >= self.busy_after_s:
            self.busy = True

    def seed(self, now: float) -> None:
        """Start busy (the portal was busy where it was served before): quiet after ``quiet_after_s``
        without a full claim here."""
        self.busy, self.last_full = True, now

    def is_busy(self, now: float) -> bool:
        if self.busy and (self.last_full is None or now - self.last_full >= self.quiet_after_s):
            self.busy = False
        return self.busy
