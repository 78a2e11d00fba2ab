"""Dead-letter operations on a real Redis, and a replay that the worker then applies against the emulator."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from harness import Bench

from bitrix_worker.defaults import StreamKeys
from bitrix_worker.redis.deadletter import DeadLetters, parse_id


def _error(cls: str, description: str, attempts: int = 2) -> str:
    history = [
        {"kind": "attempt", "attempt": i + 1, "class": cls, "description": description, "at_ms": i}
        for i in range(attempts)
    ]
    return json.dumps({"class": cls, "description": description, "attempts": attempts, "history": history})


def _payload(key: str, op: str = "create") -> str:
    return json.dumps({"op": op, "entity": "deal", "key": key, "fields": {"TITLE": key}})


@pytest.fixture
def keys(key_prefix: str) -> StreamKeys:
    return StreamKeys(stream=f"{key_prefix}:ops", dead=f"{key_prefix}:dead")


async def _seed(client: aioredis.Redis, keys: StreamKeys, rows: list[tuple[str, str]]) -> list[str]:
    ids = []
    for key, cls in rows:
        raw = await client.xadd(
            keys.dead, {"payload": _payload(key), "error": _error(cls, f"{cls} for {key}")}
        )
        ids.append(raw.decode())
    return ids


async def test_list_filters_by_class_and_orders_newest_first(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    ids = await _seed(redis_client, keys, [("a", "invalid_data"), ("b", "auth"), ("c", "invalid_data")])
    dead = DeadLetters(redis_client, keys)
    assert [e.id for e in await dead.entries()] == ids[::-1]
    assert [e.id for e in await dead.entries(newest=False, limit=2)] == ids[:2]
    invalid = await dead.entries(error_class="invalid_data")
    assert [e.key for e in invalid] == ["deal:c", "deal:a"]
    assert invalid[0].summary()["description"] == "invalid_data for c"
    shown = await dead.get(ids[1])
    assert shown is not None
    assert shown.operation["key"] == "b"
    assert len(shown.history) == 2
    assert await dead.get("1-0") is None


async def test_paging_walks_more_than_one_page(redis_client: aioredis.Redis, keys: StreamKeys) -> None:
    await _seed(redis_client, keys, [(f"k{i}", "server_error" if i % 3 else "auth") for i in range(1203)])
    dead = DeadLetters(redis_client, keys)
    assert len([e async for e in dead.iterate()]) == 1203
    counts = await dead.count_by_class()
    assert counts.counts == {"server_error": 802, "auth": 401}
    assert not counts.truncated
    capped = await dead.count_by_class(cap=100)
    assert (capped.scanned, capped.size, capped.truncated) == (100, 1203, True)


async def test_replay_moves_entries_atomically_and_keeps_payload_and_history(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    ids = await _seed(redis_client, keys, [("a", "invalid_data"), ("b", "auth")])
    dead = DeadLetters(redis_client, keys)
    chosen, missing = await dead.select(ids=[ids[0], "1-1"])
    assert missing == ["1-1"]
    report = await dead.replay(chosen)
    assert [d for d, _ in report.replayed] == [ids[0]]
    rows = await redis_client.xrange(keys.stream)
    assert len(rows) == 1
    fields = rows[0][1]
    assert fields[b"payload"].decode() == _payload("a")  # unchanged bytes
    assert [h["class"] for h in json.loads(fields[b"history"])] == ["invalid_data", "invalid_data"]
    assert fields[b"replayed_from"].decode() == ids[0]
    assert b"error" not in fields
    assert [e.id for e in await dead.entries()] == [ids[1]]
    again = await dead.replay(chosen)  # a second operator replaying the same entry enqueues nothing
    assert again.missing == [ids[0]]
    assert await redis_client.xlen(keys.stream) == 1


async def test_replay_dry_run_changes_nothing(redis_client: aioredis.Redis, keys: StreamKeys) -> None:
    await _seed(redis_client, keys, [("a", "auth"), ("b", "auth"), ("c", "network")])
    dead = DeadLetters(redis_client, keys)
    chosen, _ = await dead.select(error_class="auth")
    report = await dead.replay(chosen, dry_run=True)
    assert [e.key for e in report.selected] == ["deal:a", "deal:b"]
    assert report.replayed == []
    assert await dead.size() == 3
    assert await redis_client.xlen(keys.stream) == 0


async def test_replay_is_paced_by_rate(redis_client: aioredis.Redis, keys: StreamKeys) -> None:
    await _seed(redis_client, keys, [(f"k{i}", "network") for i in range(11)])
    dead = DeadLetters(redis_client, keys)
    chosen, _ = await dead.select(everything=True)
    started = time.monotonic()
    report = await dead.replay(chosen, rate_per_s=50)
    elapsed = time.monotonic() - started
    assert len(report.replayed) == 11
    assert elapsed >= 10 / 50 * 0.95
    ids = [r[0].decode() for r in await redis_client.xrange(keys.stream)]
    assert ids == [s for _, s in report.replayed]  # oldest first: per-key order kept


async def test_purge_by_id_class_and_all(redis_client: aioredis.Redis, keys: StreamKeys) -> None:
    ids = await _seed(redis_client, keys, [("a", "auth"), ("b", "poison"), ("c", "poison"), ("d", "auth")])
    dead = DeadLetters(redis_client, keys)
    chosen, _ = await dead.select(ids=[ids[0]])
    assert await dead.purge(chosen) == 1
    chosen, _ = await dead.select(error_class="poison")
    assert await dead.purge(chosen) == 2
    assert [e.key for e in await dead.entries()] == ["deal:d"]
    chosen, _ = await dead.select(everything=True)
    assert await dead.purge(chosen) == 1
    assert await dead.size() == 0
    assert await dead.select() == ([], [])  # no selector selects nothing


@pytest.mark.parametrize(("raw", "expected"), [("1700000000000-3", "1700000000000-3"), (" 17 ", "17-0")])
def test_parse_id(raw: str, expected: str) -> None:
    assert parse_id(raw) == expected


def test_parse_id_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a stream id"):
        parse_id("abc")


async def _dead_letter_one_create(bench: Bench) -> tuple[DeadLetters, Any]:
    """A create that fails on its own: its command fails while the portal answers its neighbour's (the
    neighbour is an update of a deal made first, which the 500 rule on crm.deal.add does not touch)."""
    bench.with_settings(retries_server_error=1)
    await bench.enqueue("create", "neighbour", {"TITLE": "n"})
    await bench.run()
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "500"}])
    await bench.enqueue("create", "order-r", {"TITLE": "replayed"})
    await bench.enqueue("update", "neighbour", {"TITLE": "n2"})
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 1, "applied": 1}
    dead = DeadLetters(bench.redis, bench.settings.keys)
    (entry,) = await dead.entries()
    return dead, entry


async def test_replayed_entry_is_applied_by_the_worker_with_its_history(bench: Bench) -> None:
    dead, entry = await _dead_letter_one_create(bench)
    assert entry.error_class == "server_error"
    await bench.admin.clear_faults()  # the fix
    report = await dead.replay([entry])
    assert len(report.replayed) == 1
    summary = await bench.run()
    assert summary.outcomes == {"applied": 1}
    assert await dead.size() == 0
    (deal,) = [d for d in await bench.entities() if d["ORIGIN_ID"] == "order-r"]
    assert deal["TITLE"] == "replayed"
    last = (await bench.outcomes())[-1]
    assert (last["outcome"], last["reason"]) == ("applied", "created")
    assert last["attempts"] == "2"  # the two failed attempts before the replay are still counted
    assert await bench.total_calls("crm.deal.add") == 1 + 3  # the neighbour's, then 2 failed + 1
    assert await bench.total_calls("crm.deal.list") == 2  # after its ambiguous 500, and after the replay


async def test_replay_that_fails_again_starts_a_fresh_budget_and_extends_the_history(bench: Bench) -> None:
    dead, entry = await _dead_letter_one_create(bench)
    await dead.replay([entry])  # fault not fixed: it fails again, with a fresh budget of 1 retry
    await bench.run()
    assert await bench.total_calls("crm.deal.add") == 1 + 4
    (again,) = await dead.entries()
    assert again.payload == entry.payload
    assert [h["attempt"] for h in again.history if h["kind"] == "attempt"] == [1, 2, 3, 4]
    assert [h["kind"] for h in again.history].count("replay") == 1  # the replay is on the record too
    assert again.error["attempts"] == 4


async def test_replay_skips_what_would_roll_its_key_back_unless_forced(bench: Bench) -> None:
    """An unversioned update dead-lettered on Monday and replayed after the deal reached WON must not put it
    back to NEW: `dlq replay` (and --dry-run) skips it with the reason; --force replays it."""
    import json as _json

    from harness import settings_env
    from typer.testing import CliRunner

    from bitrix_worker.cli import app

    await bench.enqueue("create", "guard", {"STAGE_ID": "NEW"})
    await bench.run()
    await bench.admin.set_faults(rules=[{"method": "crm.deal.update", "kind": "invalid"}])
    await bench.enqueue("update", "guard", {"STAGE_ID": "PREPARATION"})
    await bench.run()
    assert len(await bench.dead()) == 1
    await bench.admin.set_faults(rules=[])
    await bench.enqueue("update", "guard", {"STAGE_ID": "WON"})
    await bench.run()
    env = settings_env(bench.settings)
    runner = CliRunner()
    dry = await asyncio.to_thread(
        runner.invoke, app, ["dlq", "replay", "--all", "--dry-run", "--json"], env=env
    )
    assert dry.exit_code == 0, dry.output
    report = _json.loads(dry.output)
    assert report["would_replay"] == []
    assert "written at" in report["skipped"][0]["reason"]
    done = await asyncio.to_thread(runner.invoke, app, ["dlq", "replay", "--all", "--json"], env=env)
    assert _json.loads(done.output)["replayed"] == []
    await bench.run()
    (deal,) = await bench.entities()
    assert deal["STAGE_ID"] == "WON"
    forced = await asyncio.to_thread(
        runner.invoke, app, ["dlq", "replay", "--all", "--force", "--json"], env=env
    )
    assert len(_json.loads(forced.output)["replayed"]) == 1
    await bench.run()
    (deal,) = await bench.entities()
    assert deal["STAGE_ID"] == "PREPARATION"  # forced: the operator asked for it


async def test_a_replayed_create_looks_itself_up_first(bench: Bench) -> None:
    """A create can commit and still be dead-lettered (its batch failed afterwards): replaying it must adopt
    what it made, not make a second deal."""
    import json as _json

    from bitrix_worker.bitrix import BitrixClient
    from bitrix_worker.redis.deadletter import DeadLetters

    s = bench.settings
    client = BitrixClient(s.webhook, connect_timeout_s=2, read_timeout_s=5)
    try:
        fields = {"TITLE": "x", "ORIGINATOR_ID": s.originator_id, "ORIGIN_ID": "made-before"}
        await client.call("crm.deal.add", {"fields": fields})
    finally:
        await client.aclose()
    payload = _json.dumps({"op": "create", "entity": "deal", "key": "made-before", "fields": {"TITLE": "x"}})
    error = _json.dumps({"class": "server_error", "history": [], "stream_id": "1-0", "may_have_run": True})
    await bench.redis.xadd(s.dead_stream, {"payload": payload, "error": error})
    letters = DeadLetters(bench.redis, s.keys)
    chosen, _ = await letters.select(everything=True)
    await letters.replay(chosen, rate_per_s=0)
    summary = await bench.run()
    assert summary.outcomes == {"applied": 1}
    assert len(await bench.entities()) == 1
    assert (await bench.outcomes())[-1]["reason"] == "adopted existing entity"
