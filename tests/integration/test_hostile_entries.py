"""Hostile stream entries: each is judged alone, none stalls, poisons or steals the others read with it.

One regression per item of the hostile-input issue (entries 1-6, health 11) and the crash-loop item of the
outage issue; real Redis, the emulator over HTTP, a worker run until idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
import structlog
from harness import Bench

from bitrix_worker.bitrix.client import BitrixClient
from bitrix_worker.inflight import InFlight
from bitrix_worker.intake import build_units
from bitrix_worker.monitoring import HttpServer, Probes, create_app
from bitrix_worker.reclaiming import Reclaimer
from bitrix_worker.redis.deadletter import DeadLetters
from bitrix_worker.redis.streams import OperationQueue
from bitrix_worker.taxonomy import Classification, ErrorClass, Execution
from bitrix_worker.values import Settlement
from bitrix_worker.worker import Worker


def raw(**payload: Any) -> bytes:
    return json.dumps(payload).encode()


async def enqueue_beside_valid(bench: Bench, bad: dict[str, Any], n_valid: int = 5) -> tuple[str, list[str]]:
    """A bad entry in the middle of valid creates, all read in one claim."""
    valid = [await bench.enqueue("create", f"ok-{i}", {"TITLE": "x"}) for i in range(n_valid // 2)]
    bad_id = await bench.enqueue_raw(bad)
    valid += [await bench.enqueue("create", f"ok-{i}", {"TITLE": "x"}) for i in range(n_valid // 2, n_valid)]
    return bad_id, valid


async def assert_clean(bench: Bench) -> None:
    """Nothing pending, parked, held or remembered: every entry reached its end."""
    k = bench.settings.keys
    assert await bench.redis.xlen(k.stream) == 0
    assert (await bench.redis.xpending(k.stream, bench.settings.group))["pending"] == 0
    assert await bench.redis.hlen(k.holds) == 0
    assert await bench.redis.hlen(k.parked) == 0
    assert await bench.redis.hkeys(k.own) == [b"~since"]
    assert await bench.redis.hlen(k.sent) == 0


async def dead_errors(bench: Bench) -> list[dict[str, Any]]:
    """The dead letters' errors (their payloads may be anything: not read here)."""
    return [json.loads(f[b"error"]) for _, f in await bench.redis.xrange(bench.settings.dead_stream)]


async def poisoned(bench: Bench, stream_id: str) -> dict[str, Any]:
    (error,) = [e for e in await dead_errors(bench) if e["stream_id"] == stream_id]
    assert error["class"] == "poison"
    return error


async def applied_keys(bench: Bench) -> list[str]:
    return sorted(d["ORIGIN_ID"] for d in await bench.entities())


# ---- 1: depth and size -------------------------------------------------------------------------------


async def test_deeply_nested_and_huge_payloads_are_poison_and_their_batch_is_delivered(bench: Bench) -> None:
    deep = b'{"op":"create","entity":"deal","key":"deep","fields":{"X":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    deep_id, _ = await enqueue_beside_valid(bench, {"payload": deep})
    huge_id = await bench.enqueue_raw(
        {"payload": raw(op="create", entity="deal", key="huge", fields={"X": "y" * (1 << 20)})}
    )
    summary = await bench.run()
    assert summary.outcomes == {"applied": 5, "dead_lettered": 2}
    assert "nested more than 32 levels deep" in (await poisoned(bench, deep_id))["reason"]
    assert "more than the 1048576 allowed" in (await poisoned(bench, huge_id))["reason"]
    assert await applied_keys(bench) == [f"ok-{i}" for i in range(5)]
    await assert_clean(bench)
    shown = [e.summary() async for e in DeadLetters(bench.redis, bench.settings.keys).iterate()]  # dlq list
    assert [s["key"] for s in shown] == ["?", "deal:huge"]


async def test_reclaim_bookkeeping_never_leaks_a_slot_or_an_in_flight_mark(bench: Bench) -> None:
    """Reclaimed entries wait for slots in the in-flight set; a cancel while waiting forgets the groups not
    yet spawned and gives back no slot it does not hold."""
    ids = [await bench.enqueue("update", f"k{i}", {"X": i}) for i in range(3)]
    s = bench.settings
    dead_consumer = OperationQueue(bench.redis, s.keys, group=s.group, consumer="dead")
    await dead_consumer.ensure_group()
    await dead_consumer.claim(10)
    await asyncio.sleep(0.05)
    queue = OperationQueue(bench.redis, s.keys, group=s.group, consumer="rescuer")
    never_ends = asyncio.Event()
    batches = InFlight(1, lambda group: never_ends.wait(), structlog.get_logger())  # type: ignore[arg-type,return-value]
    reclaimer = Reclaimer(queue, batches, claim_idle_ms=10, batch_size=1)
    sweep = asyncio.create_task(reclaimer.sweep(asyncio.Event()))
    await asyncio.sleep(0.3)
    assert not sweep.done()  # the second group waits for the slot the first batch holds
    sweep.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweep
    assert batches.busy
    assert batches.ids == set(ids[:1])  # the unspawned groups are not kept fresh for nobody
    never_ends.set()
    await batches.drain(1.0)
    assert batches.ids == set()
    await asyncio.wait_for(batches.take_slot(), 1.0)  # the one slot came back: not leaked ...
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batches.take_slot(), 0.2)  # ... and not given back twice


async def test_a_reclaimed_deep_entry_is_poison_and_leaks_no_slot(bench: Bench) -> None:
    deep = b'{"op":"update","entity":"deal","key":"deep","fields":{"X":' + b"[" * 3000 + b"]" * 3000 + b"}}"
    ids = [await bench.enqueue_raw({"payload": deep}) for _ in range(4)]
    ids.append(await bench.enqueue("create", "after", {"TITLE": "x"}))
    s = bench.settings
    dead_consumer = OperationQueue(bench.redis, s.keys, group=s.group, consumer="dead")
    await dead_consumer.ensure_group()
    claimed, _ = await dead_consumer.claim(10)
    assert [e.id for e in claimed] == ids
    await asyncio.sleep(0.15)
    summary = await bench.run(claim_idle_ms=100, concurrency=1)
    assert summary.outcomes == {"applied": 1, "dead_lettered": 4}
    assert await applied_keys(bench) == ["after"]
    await assert_clean(bench)


# ---- 2, 3: lone surrogates ----------------------------------------------------------------------------


async def test_a_lone_surrogate_in_the_key_is_poison_and_run_until_idle_returns(bench: Bench) -> None:
    bad_id, _ = await enqueue_beside_valid(
        bench, {"payload": b'{"op":"create","entity":"deal","key":"K\\ud800"}'}
    )
    summary = await bench.run(timeout_s=20)
    assert summary.outcomes == {"applied": 5, "dead_lettered": 1}
    assert "lone UTF-16 surrogate" in (await poisoned(bench, bad_id))["reason"]
    await assert_clean(bench)


async def test_a_lone_surrogate_in_a_field_name_or_value_is_poison_alone(bench: Bench) -> None:
    name_id, _ = await enqueue_beside_valid(
        bench, {"payload": b'{"op":"create","entity":"deal","key":"n","fields":{"T\\udc00":"x"}}'}
    )
    value_id = await bench.enqueue_raw(
        {"payload": b'{"op":"create","entity":"deal","key":"v","fields":{"TITLE":"half \\ud83d"}}'}
    )
    pair_id = await bench.enqueue_raw(
        {"payload": b'{"op":"create","entity":"deal","key":"p","fields":{"TITLE":"smile \\ud83d\\ude00"}}'}
    )
    summary = await bench.run()
    assert summary.outcomes == {"applied": 6, "dead_lettered": 2}
    assert "a name in fields holds a lone UTF-16 surrogate" in (await poisoned(bench, name_id))["reason"]
    assert "fields.TITLE holds a lone UTF-16 surrogate" in (await poisoned(bench, value_id))["reason"]
    assert pair_id not in [e["stream_id"] for e in await dead_errors(bench)]
    titles = {d["ORIGIN_ID"]: d.get("TITLE") for d in await bench.entities()}
    assert titles["p"] == "smile \U0001f600"
    await assert_clean(bench)


# ---- 4: version bound ---------------------------------------------------------------------------------


async def test_a_version_beyond_what_the_store_holds_is_poison_before_anything_is_sent(bench: Bench) -> None:
    big_id, _ = await enqueue_beside_valid(
        bench, {"payload": raw(op="create", entity="deal", key="big", fields={}, version=2**63)}
    )
    await bench.enqueue("create", "max", {"TITLE": "x"}, version=2**63 - 1)
    summary = await bench.run()
    assert summary.outcomes == {"applied": 6, "dead_lettered": 1}
    assert "version: Input should be less than or equal to" in (await poisoned(bench, big_id))["reason"]
    assert "big" not in await applied_keys(bench)
    assert (await bench.workers[-1].store.get_many([("deal", "max")]))[("deal", "max")].version == 2**63 - 1
    await assert_clean(bench)


# ---- 5: one canonical key encoding --------------------------------------------------------------------


async def test_a_key_that_is_not_utf8_holds_no_turn(bench: Bench) -> None:
    bad = b'{"op":"create","entity":"deal","key":"K\xff"}'
    bad_id, _ = await enqueue_beside_valid(bench, {"payload": bad})
    overlong = b'{"op":"create","entity":"deal","key":"K\xc0\xaf"}'  # "/" as an overlong form
    cesu = b'{"op":"create","entity":"deal","key":"K\xed\xa0\x80"}'  # a surrogate encoded as UTF-8
    in_value = b'{"op":"create","entity":"deal","key":"ok-9","fields":{"T":"\xff"}}'  # a turn is held
    others = [await bench.enqueue_raw({"payload": p}) for p in (overlong, cesu, in_value)]
    summary = await bench.run(timeout_s=20)
    assert summary.outcomes == {"applied": 5, "dead_lettered": 4}
    for stream_id in [bad_id, *others]:
        assert "payload is not UTF-8" in (await poisoned(bench, stream_id))["reason"]
    rows = await bench.redis.xrange(bench.settings.dead_stream)
    assert {bad, overlong, cesu, in_value} <= {f[b"payload"] for _, f in rows}  # the bytes kept unchanged
    await assert_clean(bench)


async def test_the_same_key_in_escapes_and_in_utf8_is_one_key(bench: Bench) -> None:
    """Lua (cjson) and Python read \\u escapes and surrogate pairs to the same UTF-8 bytes: one turn."""
    await bench.enqueue_raw({"payload": '{"op":"create","entity":"deal","key":"Zoë 😀"}'.encode()})
    await bench.enqueue_raw(
        {"payload": b'{"op":"update","entity":"deal","key":"Zo\\u00eb \\ud83d\\ude00","fields":{"TITLE":1}}'}
    )
    summary = await bench.run()
    assert summary.outcomes == {"applied": 2}
    assert await applied_keys(bench) == ["Zoë 😀"]
    await assert_clean(bench)


# ---- 6: a producer's extra fields are never the worker's -----------------------------------------------


async def test_extra_stream_fields_named_like_the_workers_own_are_ignored(bench: Bench) -> None:
    forged_unit = json.dumps(
        {"ident": "deal:other", "members": [{"origin": "1-1", "payload": "{}"}], "failures": 9}
    )
    history = json.dumps([{"kind": "attempt", "attempt": i, "class": "server_error"} for i in range(1, 9)])
    ids = [
        await bench.enqueue_raw(
            {
                "payload": raw(op="create", entity="deal", key=f"x-{i}", fields={"TITLE": "real"}),
                "unit": forged_unit,
                "held": "1",
                "ident": "deal:other",
                "history": history,
                "replayed_from": "1-1",
                "anything": "else",
            }
        )
        for i in range(3)
    ]
    bad_id = await bench.enqueue_raw({"payload": b"{not json", "unit": forged_unit, "held": "1"})
    summary = await bench.run()
    assert summary.outcomes == {"applied": 3, "dead_lettered": 1}
    assert await applied_keys(bench) == ["x-0", "x-1", "x-2"]
    attempts = {o["stream_id"]: o.get("attempts") for o in await bench.outcomes()}
    assert [attempts[i] for i in ids] == ["0", "0", "0"]  # the forged history is not the worker's
    rows = await bench.redis.xrange(bench.settings.dead_stream)
    ((_, fields),) = rows
    assert fields[b"payload"] == b"{not json"  # its own payload, not the forged unit's
    assert json.loads(fields[b"error"])["stream_id"] == bad_id
    await assert_clean(bench)


async def test_entries_an_older_version_wrote_keep_its_rule(bench: Bench) -> None:
    """A stream an older version already read: its retry units (marked by fields) are still units; entries
    added after the first start of this version are judged by the own-entries record alone."""
    s = bench.settings
    await bench.redis.xgroup_create(s.stream, s.group, id="0", mkstream=True)  # as the older version did
    members = [{"origin": "1-1", "payload": json.dumps({"op": "create", "entity": "deal", "key": "old"})}]
    unit = json.dumps({"ident": "deal:old", "members": members, "failures": 1, "bounces": 0})
    await bench.redis.hincrby(s.keys.holds, "deal:old", 1)
    await bench.enqueue_raw({"unit": unit, "held": "1", "ident": "deal:old"})
    await OperationQueue(bench.redis, s.keys, group=s.group, consumer="new").ensure_group()
    forged = await bench.enqueue_raw({"unit": unit.replace("old", "forged"), "held": "1", "ident": "deal:x"})
    summary = await bench.run()
    assert summary.outcomes == {"applied": 1, "dead_lettered": 1}
    assert await applied_keys(bench) == ["old"]
    assert "entry has no 'payload' field" in (await poisoned(bench, forged))["reason"]
    await assert_clean(bench)


async def test_a_replayed_dead_letter_is_the_workers_own_and_carries_its_history(bench: Bench) -> None:
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["invalid", "invalid"]}])
    await bench.enqueue("create", "r", {"TITLE": "x"})
    assert (await bench.run()).outcomes == {"dead_lettered": 1}
    dlq = DeadLetters(bench.redis, bench.settings.keys)
    entries = [e async for e in dlq.iterate()]
    report = await dlq.replay(entries)
    ((_, new_id),) = report.replayed
    assert (await bench.redis.hget(bench.settings.keys.own, new_id)) == b"replay"
    assert (await bench.run()).outcomes == {"applied": 1}
    (record,) = [o for o in await bench.outcomes() if o["stream_id"] == new_id]
    assert int(record["attempts"]) == 2  # the two attempts before it was dead-lettered
    await assert_clean(bench)


# ---- issue 15 item 6: only sent deliveries count; a create is looked up first --------------------------


async def claimed_and_abandoned(bench: Bench, times: int, *, sent: bool) -> str:
    """Deliver the only pending entry ``times`` times to consumers that die (after sending, or before)."""
    s = bench.settings
    queue = OperationQueue(bench.redis, s.keys, group=s.group, consumer="dying")
    await queue.ensure_group()
    (entry,), _ = await queue.claim(10)
    for i in range(times):
        if sent:
            await queue.mark_sent([entry.id])
        if i < times - 1:
            await asyncio.sleep(0.02)
            await queue.reclaim(min_idle_ms=10, count=10)
    await asyncio.sleep(0.15)
    return entry.id


async def test_deliveries_that_died_before_sending_do_not_make_poison(bench: Bench) -> None:
    await bench.enqueue("create", "waited", {"TITLE": "x"})
    await claimed_and_abandoned(bench, bench.settings.max_deliveries * 3, sent=False)
    summary = await bench.run(claim_idle_ms=100)
    assert summary.outcomes == {"applied": 1}
    assert await bench.dead() == []
    assert await applied_keys(bench) == ["waited"]
    await assert_clean(bench)


async def test_a_crash_looping_create_that_exists_is_adopted_not_dead_lettered(bench: Bench) -> None:
    await bench.enqueue("create", "made", {"TITLE": "x"})
    await claimed_and_abandoned(bench, bench.settings.max_deliveries, sent=True)
    async with BitrixClient(bench.settings.webhook, connect_timeout_s=2, read_timeout_s=5) as client:
        await client.add(
            "deal", {"TITLE": "x", "ORIGINATOR_ID": bench.settings.originator_id, "ORIGIN_ID": "made"}
        )
    summary = await bench.run(claim_idle_ms=100)
    assert summary.outcomes == {"applied": 1}
    assert await bench.dead() == []
    assert await applied_keys(bench) == ["made"]  # one deal, not two
    (outcome,) = await bench.outcomes()
    assert outcome["reason"].startswith("adopted")
    await assert_clean(bench)


async def test_a_crash_looping_create_that_never_ran_is_poison_with_that_said(bench: Bench) -> None:
    await bench.enqueue("create", "never", {"TITLE": "x"})
    stream_id = await claimed_and_abandoned(bench, bench.settings.max_deliveries, sent=True)
    summary = await bench.run(claim_idle_ms=100)
    assert summary.outcomes == {"dead_lettered": 1}
    reason = (await poisoned(bench, stream_id))["reason"]
    assert reason.startswith("sent 5 times without finishing: it keeps failing a worker")
    assert "not in Bitrix24" in reason
    assert await bench.total_calls("crm.deal.add") == 0
    await assert_clean(bench)


# ---- 11: health says so when a worker is stuck ---------------------------------------------------------


async def test_healthz_and_readyz_report_a_worker_that_holds_entries_without_progress(bench: Bench) -> None:
    await bench.admin.set_faults(latency={"dist": "fixed", "s": 2.5})
    await bench.enqueue("create", "slow", {"TITLE": "x"})
    settings = bench.with_settings(read_timeout_s=10.0, stall_after_s=0.5).settings
    async with Worker.open(settings) as worker, httpx.AsyncClient() as http:
        task = asyncio.create_task(worker.run(until_idle=True))
        probes = Probes(
            settings,
            worker.reader,
            worker.store,
            worker.portal.gate,
            lambda: not task.done(),
            stuck=worker.stuck,
        )
        server = HttpServer(create_app(probes), "127.0.0.1", 0)
        await server.start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            assert (await http.get(f"{base}/healthz")).status_code == 200
            await asyncio.sleep(1.2)  # the request is still running: no progress for longer than 0.5 s
            health = await http.get(f"{base}/healthz")
            ready = await http.get(f"{base}/readyz")
            assert health.status_code == 503
            assert health.json()["reason"].startswith("stuck: holds 1 entries and made no progress for")
            assert "BITRIX_WORKER_STALL_AFTER_S" in health.json()["reason"]
            assert ready.status_code == 503
            assert ready.json()["reason"].startswith("stuck:")
            await asyncio.wait_for(task, 20)
        finally:
            await server.stop()
    assert (await bench.outcomes())[0]["outcome"] == "applied"
    assert worker.stuck() is None  # holds nothing any more


async def test_a_lone_surrogate_from_a_portals_answer_never_blocks_a_retry(bench: Bench) -> None:
    """A history description carrying a lone surrogate (a hostile portal's error text) travels through
    settle and promote: cjson never sees a surrogate escape."""
    await bench.enqueue("update", "s", {"X": 1})
    s = bench.settings
    queue = OperationQueue(bench.redis, s.keys, group=s.group, consumer="c")
    await queue.ensure_group()
    entries, _ = await queue.claim(10)
    (unit,), _ = build_units(entries, max_deliveries=5, at_ms=0)
    failure = Classification(ErrorClass.SERVER_ERROR, Execution.NOT_EXECUTED, description="bad \ud800 text")
    unit.record(failure, method="crm.deal.update", at_ms=0)
    retry = Settlement(
        ids=unit.stream_ids, ident=unit.ident, action="retry", origin=unit.origin, unit=unit.to_json()
    )
    assert await queue.settle([retry]) == [True]
    assert await queue.promote_due() == 1
    (back,), _ = await queue.claim(10)
    assert (back.whose, back.ident) == ("unit", "deal:s")
    (again,), poison = build_units([back], max_deliveries=5, at_ms=0)
    assert poison == []
    assert again.history[0]["description"] == "bad ? text"
