"""The operation stream, its consumer group, the retry schedule and the per-key turns, in Redis.

Every state change is one Lua script (see ``lua/``), so that an operation is at every moment in exactly one
place: the stream (new or pending), a key's parked list, the retry schedule, or the dead-letter stream.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ..defaults import StreamKeys
from ..errors import StoreError
from ..operations import PAYLOAD_FIELD
from .scripts import register


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry as read by this consumer."""

    id: str
    ident: str
    fields: dict[str, bytes]
    deliveries: int = 1

    @property
    def payload(self) -> bytes | None:
        return self.fields.get(PAYLOAD_FIELD)

    def text(self, name: str) -> str | None:
        raw = self.fields.get(name)
        return None if raw is None else _text(raw)


def _entry(raw_id: Any, ident: Any, flat: Sequence[Any], deliveries: int = 1) -> Entry:
    fields = {_text(flat[i]): bytes(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
    return Entry(_text(raw_id), _text(ident), fields, deliveries)


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


class OperationQueue:
    """Consumer-group access for one worker process. All methods raise StoreError on Redis failures."""

    def __init__(
        self,
        client: Redis,
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
        self._settle = register(client, "settle")
        self._promote = register(client, "promote")
        self._reclaim = register(client, "reclaim")
        self._parked_prefix = keys.parked("")

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.keys.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise StoreError(f"cannot create consumer group {self.group!r}: {exc}") from exc
        except RedisError as exc:
            raise StoreError(f"cannot create consumer group {self.group!r}: {exc}") from exc

    async def claim(self, count: int) -> tuple[list[Entry], str]:
        """New entries whose key's turn this consumer now owns; parked ones are not returned."""
        try:
            owned, last = await self._claim(
                keys=[self.keys.stream, self.keys.holds],
                args=[self.group, self.consumer, count, self._parked_prefix],
            )
        except RedisError as exc:
            raise StoreError(f"claim failed: {exc}") from exc
        return [_entry(i, ident, flat) for i, ident, flat in owned], _text(last)

    async def wait_for_new(self, last_id: str, block_ms: int) -> None:
        """Block until an entry newer than ``last_id`` exists (or the timeout passes)."""
        try:
            await self.client.xread({self.keys.stream: last_id}, count=1, block=block_ms)
        except RedisError as exc:
            raise StoreError(f"wait failed: {exc}") from exc

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if not settlements:
            return []
        k = self.keys
        try:
            result = await self._settle(
                keys=[k.stream, k.holds, k.schedule, k.schedule_data, k.dead, k.outcomes, k.counters],
                args=[
                    self.group,
                    self.consumer,
                    self._parked_prefix,
                    self.outcomes_maxlen,
                    self.segment_limit,
                    json.dumps([s.as_json() for s in settlements]),
                ],
            )
        except RedisError as exc:
            raise StoreError(f"settle failed: {exc}") from exc
        return [bool(r) for r in result]

    async def dead_letter_raw(self, entry: Entry, error: str, outcome: Sequence[str] = ()) -> None:
        """Dead-letter an entry that has no key (undecodable), keeping its payload bytes unchanged.

        Such an entry holds no key's turn, so a MULTI (ack + delete + add) is enough to keep it atomic. It is
        counted and recorded (``outcome``: flat field/value pairs) like every other poison dead letter.
        """
        fields: dict[str, bytes | str] = dict(entry.fields)
        fields["error"] = error
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.keys.stream, self.group, entry.id)
                pipe.xdel(self.keys.stream, entry.id)
                pipe.xadd(self.keys.dead, fields)  # type: ignore[arg-type]
                pipe.hincrby(self.keys.counters, "outcome:dead_lettered", 1)
                pipe.hincrby(self.keys.counters, "dead_lettered:poison", 1)
                if self.outcomes_maxlen > 0 and outcome:
                    record: dict[Any, Any] = dict(zip(outcome[::2], outcome[1::2], strict=True))
                    pipe.xadd(self.keys.outcomes, record, maxlen=self.outcomes_maxlen, approximate=True)
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"dead-letter failed: {exc}") from exc

    async def promote_due(self, limit: int = 500) -> int:
        try:
            moved = await self._promote(
                keys=[self.keys.schedule, self.keys.schedule_data, self.keys.stream], args=[limit]
            )
        except RedisError as exc:
            raise StoreError(f"promote failed: {exc}") from exc
        return int(moved)

    async def reclaim(self, min_idle_ms: int, count: int, start: str = "0-0") -> tuple[list[Entry], str]:
        """Entries idle on other (presumed dead) consumers, now ours, with delivery counts."""
        try:
            nxt, items = await self._reclaim(
                keys=[self.keys.stream], args=[self.group, self.consumer, min_idle_ms, start, count]
            )
        except RedisError as exc:
            raise StoreError(f"reclaim failed: {exc}") from exc
        entries = []
        for raw_id, deliveries, flat in items:
            fields = {_text(flat[i]): bytes(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
            ident = _text(fields.get("ident", b""))
            entries.append(Entry(_text(raw_id), ident, fields, int(deliveries)))
        return entries, _text(nxt)

    async def touch(self, ids: Sequence[str]) -> None:
        """Reset idle time of in-flight entries so slow calls are not mistaken for dead consumers."""
        if not ids:
            return
        try:
            await self.client.xclaim(self.keys.stream, self.group, self.consumer, 0, list(ids), justid=True)
        except RedisError as exc:
            raise StoreError(f"touch failed: {exc}") from exc

    async def is_idle(self) -> bool:
        """Nothing new, pending, parked-in-flight or scheduled: what ``--until-idle`` waits for."""
        k = self.keys
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xlen(k.stream)
                pipe.zcard(k.schedule)
                pipe.hlen(k.holds)
                length, scheduled, held = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"status failed: {exc}") from exc
        return int(length) == 0 and int(scheduled) == 0 and int(held) == 0
