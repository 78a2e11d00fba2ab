"""Pure: can the mapping store vouch that a key it does not know was never created?

Bitrix24's ORIGINATOR_ID + ORIGIN_ID is the truth; the mapping store is a cache of it. A store can say "never
created" only if it has seen every create of the stream: the same store (its id, recorded in Redis beside
the stream) holding every write Redis knows it made (its highest fencing token). A new store (a lost SQLite
file, a container without a volume), a different one (another host's) or a restored backup cannot: then a
create of a key the store does not know looks the key up first (in the lookups batch before the creates),
which costs one request per batch that has such creates and never a duplicate. That stays so until an
operator, knowing the store is complete again, says ``bitrix-worker store vouch``.

Several hosts with separate SQLite files on one stream would each be a different store at once: that is
refused at start (use one PostgreSQL store for more than one host). So is a SQLite store with the *same* id on
two hosts (a file copied into each host's image, or one file on a network share): two copies that will
drift apart, or one file whose locks a network file system does not keep. Each worker records, beside its
store's id, its host and whether the store is SQLite (``StoreUse``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """What Redis remembers about the stream's mapping store."""

    store_id: str
    fence: int  # the highest fencing token written to it (raised by the workers' heartbeats)
    vouched: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    vouched: bool
    record: StoreRecord | None = None  # what to record in Redis (None: leave it)
    refuse: str | None = None  # why this worker must not start
    note: str = ""  # what to log


@dataclass(frozen=True, slots=True)
class StoreUse:
    """Which store a worker uses, from which host (``host`` is None for a worker of an older version, which
    recorded the store's id only)."""

    store_id: str
    host: str | None = None
    sqlite: bool = False

    def encode(self) -> str:
        return json.dumps({"store": self.store_id, "host": self.host, "sqlite": self.sqlite})

    @classmethod
    def decode(cls, raw: str) -> StoreUse:
        try:
            data = json.loads(raw) if raw.startswith("{") else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return cls(raw)  # an older worker's line: the store's id alone
        host = data.get("host")
        return cls(
            str(data.get("store", "")), host if isinstance(host, str) else None, data.get("sqlite") is True
        )


def sqlite_on_several_hosts(me: StoreUse, live_others: dict[str, StoreUse]) -> str | None:
    """Why this worker must not start: it or a live worker on another host uses SQLite for this stream."""
    for consumer, other in sorted(live_others.items()):
        if other.host is None or me.host is None or other.host == me.host:
            continue
        if me.sqlite or other.sqlite:
            return (
                f"worker {consumer} on host {other.host} shares this stream, and a SQLite mapping store is "
                f"one host's file (this is host {me.host}): several hosts need one shared store, use "
                "PostgreSQL (DATABASE_URL=postgresql://...)"
            )
    return None


def store_verdict(
    recorded: StoreRecord | None,
    store_id: str,
    store_fence: int,
    *,
    stream_has_history: bool,
    live_other_stores: dict[str, str],
) -> Verdict:
    """``live_other_stores``: consumer -> store id of the other workers alive on this stream."""
    strangers = {c: s for c, s in live_other_stores.items() if s != store_id}
    if strangers:
        consumer = sorted(strangers)[0]
        return Verdict(
            False,
            refuse=(
                f"worker {consumer} on this stream uses a different mapping store: several hosts need one "
                "shared store, use PostgreSQL (DATABASE_URL=postgresql://...)"
            ),
        )
    if recorded is None:
        # A stream no worker has run on, or one from before stores were recorded: this store is its store.
        note = (
            "" if not stream_has_history else "recorded the mapping store of a stream run by an older version"
        )
        return Verdict(True, StoreRecord(store_id, store_fence, True), note=note)
    if recorded.store_id != store_id:
        return Verdict(
            False,
            StoreRecord(store_id, store_fence, False),
            note="a new or different mapping store: creates of keys it does not know are looked up first",
        )
    if store_fence < recorded.fence:
        return Verdict(
            False,
            StoreRecord(store_id, recorded.fence, False),
            note="the mapping store lacks writes Redis knows of (restored from a backup?): creates of keys "
            "it does not know are looked up first",
        )
    return Verdict(recorded.vouched)
