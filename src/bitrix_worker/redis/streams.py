"""The operation stream, its consumer group, the retry schedule and the per-key turns, in Redis.

Every state change is one Lua script (see ``lua/``), so that an operation is at every moment in exactly one
place: the stream (new or pending), the parked hash (a key's parked queue, or holding its key's turn while it
waits for a key it refers to), the retry schedule, or the dead-letter stream. The turn rules, cross-key
references included, are written once in ``lua/turns.lua``.
"""

from __future__ import annotations

import codecs
import contextlib
import json
from collections import deque
from collections.abc import Sequence
from typing import Any

import orjson
from redis.crc import key_slot
from redis.exceptions import ResponseError

from ..defaults import StreamKeys
from ..errors import StoreError
from ..values import Entry, Settlement, as_text
from .connection import RedisClient
from .errors import translated
from .scripts import register

CLAIMED_TOKENS_KEPT = 16  # the last claims whose fencing token a batch may still ask for (``claimed_token``)


def _entry(
    raw_id: Any, ident: Any, flat: Sequence[Any], whose: Any, *, deliveries: int = 1, sent: int = 0
) -> Entry:
    if len(flat) == 2:  # a producer's entry: its payload alone (built without a loop: every entry read)
        fields = {as_text(flat[0]): bytes(flat[1])}
    else:
        fields = {as_text(flat[i]): bytes(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
    # ``as_text`` inline for the stream id and ``whose``, as redis-py gives them (bytes): called per entry
    text_id = raw_id.decode("utf-8", "replace") if type(raw_id) is bytes else as_text(raw_id)
    by = "" if whose == b"" else as_text(whose)
    return Entry(text_id, _ident(ident), fields, deliveries, by, sent)


def _ident(raw: Any) -> str:
    """The ident exactly as Redis holds it. The scripts derive idents from valid UTF-8 only, so this decode
    is exact; bytes that are not (written by an older version) keep their bytes through surrogateescape and
    travel back unchanged in the settlement (``lua_json``)."""
    return raw.decode("utf-8", errors="surrogateescape") if isinstance(raw, bytes) else str(raw)


def lua_json(value: Any) -> bytes:
    """JSON for a script argument: UTF-8 without escapes, so cjson reads every string back byte for byte.

    A ``\\uXXXX`` escape of a lone surrogate makes cjson refuse the whole argument (the settlement would
    never land, and the entry would be redelivered forever). Here an ident's undecodable bytes go back as
    the raw bytes they were (``_ident``), and any other lone surrogate (from a portal's answer, say) becomes
    "?".

    orjson writes the same JSON (compact, UTF-8, no escapes but the ones JSON requires) several times faster;
    what it refuses (a lone surrogate, an integer beyond 64 bits) takes the ``json`` path described above.
    """
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", errors=_LENIENT)


def _lenient(exc: UnicodeError) -> tuple[bytes, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return bytes(ord(c) - 0xDC00 if 0xDC80 <= ord(c) <= 0xDCFF else ord("?") for c in bad), exc.end


_LENIENT = "bitrix-worker-lua"
codecs.register_error(_LENIENT, _lenient)


class OperationQueue:
    """Consumer-group access for one worker process. All methods raise StoreError on Redis failures."""

    def __init__(
        self,
        client: RedisClient,
        keys: StreamKeys,
        *,
        group: str,
        consumer: str,
        outcomes_maxlen: int = 0,
        segment_limit: int = 50,
    ) -> None:
        self.client = client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.outcomes_maxlen = outcomes_maxlen
        self.segment_limit = segment_limit
        self._claim = register(client, "claim")
        self._tokens: deque[tuple[frozenset[str], int]] = deque(maxlen=CLAIMED_TOKENS_KEPT)
        self._settle = register(client, "settle")
        self._promote = register(client, "promote")
        self._reclaim = register(client, "reclaim")
        self._migrate = register(client, "migrate_parked")
        self._own_since = register(client, "own_since")
        self._mark_sent = register(client, "mark_sent")

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing; note where the own-entries hash starts
        (entries older than that keep the older version's rule); move parked lists of older versions."""
        created = await self._create_group()
        with translated("recording where the own-entries hash starts"):
            await self._own_since(keys=[self.keys.stream, self.keys.own], args=[1 if created else 0])
        await self._migrate_parked_lists()

    async def _migrate_parked_lists(self) -> None:
        """Versions before 0.2 parked a key's operations in one list per key; move them into the parked
        hash (declared in the scripts' KEYS, which Redis Cluster needs). SCAN once at start, never later."""
        prefix = self.keys.legacy_parked("")
        with translated("migrating parked lists"):
            async for raw in self.client.scan_iter(match=prefix + "*", count=1000):
                key = as_text(raw)
                await self._migrate(keys=[key, self.keys.parked], args=[key[len(prefix) :]])

    async def _create_group(self) -> bool:
        """True when the group is new (no worker of any version has read this stream yet)."""
        with translated(f"creating consumer group {self.group!r}"):
            try:
                await self.client.xgroup_create(self.keys.stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                return False
        return True

    async def claim(self, count: int) -> tuple[list[Entry], str]:
        """New entries whose key's turn this consumer now owns; parked ones are not returned.

        The same script call takes the batch's fencing token (``claimed_token``), which a batch otherwise
        takes by one more round trip when it starts (``Leases.token``)."""
        k = self.keys
        with translated("claim"):
            owned, last, token = await self._claim(
                keys=[k.stream, k.holds, k.parked, k.own, k.fence], args=[self.group, self.consumer, count]
            )
        entries = [_entry(i, ident, flat, whose) for i, ident, flat, whose in owned]
        if entries and int(token) > 0:
            self._tokens.append((frozenset(e.id for e in entries), int(token)))
        return entries, as_text(last)

    def claimed_token(self, stream_ids: Sequence[str]) -> int:
        """The fencing token the claim that read all of ``stream_ids`` took (0: none known, take a new one).

        Taken when the entries were claimed, so before anything of their batch was looked up or sent: as
        good a fence as one taken when the batch starts. Entries a batch got otherwise (reclaimed from a dead
        consumer, in a batch of several claims) have none. Only the last claims not yet asked for whole are
        remembered."""
        wanted = set(stream_ids)
        for claimed in reversed(self._tokens):
            ids, token = claimed
            if wanted and wanted <= ids:
                if wanted == ids:
                    self._tokens.remove(claimed)  # its batch has it: keep only claims still to start
                return token
        return 0

    async def wait_for_new(self, last_id: str, block_ms: int) -> None:
        """Block until an entry newer than ``last_id`` exists (or the timeout passes)."""
        with translated("wait"):
            await self.client.xread({self.keys.stream: last_id}, count=1, block=block_ms)

    async def settle(
        self, settlements: Sequence[Settlement], *, also: tuple[str, dict[str, str]] | None = None
    ) -> list[bool]:
        """Settle atomically; ``also`` = (hash key, fields): bookkeeping fields (the method pauses' operating
        times) set by the same script call when the hash shares the stream's Cluster slot, else by an HSET
        after it. Either way the caller saves a round trip on the common path."""
        if not settlements:
            if also and also[1]:
                await self._bookkeeping(also)
            return []
        k = self.keys
        extra_keys: list[str] = []
        extra_args: list[bytes] = []
        separate = None
        if also and also[1]:
            if key_slot(also[0].encode()) == key_slot(k.stream.encode()):
                extra_keys, extra_args = [also[0]], [lua_json(also[1])]
            else:
                separate = also
        with translated("settle"):
            result = await self._settle(
                keys=[
                    k.stream,
                    k.holds,
                    k.schedule,
                    k.schedule_data,
                    k.dead,
                    k.outcomes,
                    k.counters,
                    k.parked,
                    k.own,
                    k.sent,
                    *extra_keys,
                ],
                args=[
                    self.group,
                    self.consumer,
                    "",
                    self.outcomes_maxlen,
                    self.segment_limit,
                    lua_json([s.as_json() for s in settlements]),
                    *extra_args,
                ],
            )
        if separate is not None:
            await self._bookkeeping(separate)
        return [bool(r) for r in result]

    async def _bookkeeping(self, also: tuple[str, dict[str, str]]) -> None:
        """Best effort: the settlement has landed, and a failure here must not make the caller settle again
        (the next answer brings the figure again)."""
        with contextlib.suppress(StoreError), translated("method tracking"):
            await self.client.hset(also[0], mapping=also[1])  # type: ignore[arg-type]

    async def dead_letter_raw(self, entry: Entry, error: str, outcome: Sequence[str] = ()) -> None:
        """Dead-letter an entry that has no key (undecodable), keeping its payload bytes unchanged.

        Such an entry holds no key's turn, so a MULTI (ack + delete + add) is enough to keep it atomic. It is
        counted and recorded (``outcome``: flat field/value pairs) like every other poison dead letter.
        """
        fields: dict[str, bytes | str] = dict(entry.fields)
        fields["error"] = error.encode("utf-8", errors=_LENIENT)
        with translated("dead-letter"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.keys.stream, self.group, entry.id)
                pipe.xdel(self.keys.stream, entry.id)
                pipe.hdel(self.keys.own, entry.id)
                pipe.hdel(self.keys.sent, entry.id)
                pipe.xadd(self.keys.dead, fields)  # type: ignore[arg-type]
                pipe.hincrby(self.keys.counters, "outcome:dead_lettered", 1)
                pipe.hincrby(self.keys.counters, "dead_lettered:poison", 1)
                if self.outcomes_maxlen > 0 and outcome:
                    record: dict[Any, Any] = dict(zip(outcome[::2], outcome[1::2], strict=True))
                    pipe.xadd(self.keys.outcomes, record, maxlen=self.outcomes_maxlen, approximate=True)
                await pipe.execute()

    async def promote_due(self, limit: int = 500) -> int:
        with translated("promote"):
            moved = await self._promote(
                keys=[self.keys.schedule, self.keys.schedule_data, self.keys.stream, self.keys.own],
                args=[limit],
            )
        return int(moved)

    async def reclaim(self, min_idle_ms: int, count: int, start: str = "0-0") -> tuple[list[Entry], str]:
        """Entries idle on other (presumed dead) consumers, now ours, with delivery counts."""
        with translated("reclaim"):
            nxt, items = await self._reclaim(
                keys=[self.keys.stream, self.keys.own, self.keys.sent],
                args=[self.group, self.consumer, min_idle_ms, start, count],
            )
        entries = [
            _entry(raw_id, ident, flat, whose, deliveries=int(deliveries), sent=int(sent))
            for raw_id, deliveries, ident, whose, sent, flat in items
        ]
        return entries, as_text(nxt)

    async def mark_sent(self, ids: Sequence[str]) -> None:
        """Count one send for each entry (still this consumer's) of a batch whose request leaves now: the
        poison cap counts these, not deliveries that died before anything was sent (mark_sent.lua)."""
        if not ids:
            return
        with translated("marking sent"):
            await self._mark_sent(
                keys=[self.keys.stream, self.keys.sent], args=[self.group, self.consumer, *ids]
            )

    async def touch(self, ids: Sequence[str]) -> None:
        """Reset idle time of in-flight entries so slow calls are not mistaken for dead consumers."""
        if not ids:
            return
        with translated("touch"):
            await self.client.xclaim(self.keys.stream, self.group, self.consumer, 0, list(ids), justid=True)


async def delete_stream_keys(client: RedisClient, keys: StreamKeys) -> None:
    """Delete a stream, its dead-letter stream and every key under its hash tag (the demo's clean-up on a
    shared Redis; SCAN, so never on a hot path)."""
    with translated("clean-up"):
        found = [k async for k in client.scan_iter(match=f"{{{keys.stream}}}:*", count=1000)]
        await client.delete(keys.stream, keys.dead, *found)
