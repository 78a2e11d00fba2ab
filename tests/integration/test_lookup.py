"""Reading one key's story back (``bitrix_worker.lookup``) after a real worker ran it against the emulator."""

from __future__ import annotations

import asyncio
import json

import pytest
from harness import Bench
from typer.testing import CliRunner, Result

from bitrix_worker import lookup_sync
from bitrix_worker.cli import app
from bitrix_worker.config import env_name
from bitrix_worker.keylookup import find_stream_id, lookup
from bitrix_worker.redis.deadletter import DeadLetters
from bitrix_worker.redis.streams import OperationQueue, Settlement


async def test_applied_key_shows_its_bitrix_id_version_and_every_outcome(bench: Bench) -> None:
    first = await bench.enqueue("create", "order-1", {"TITLE": "one"}, version=1)
    await bench.enqueue("create", "order-2", {"TITLE": "two"}, version=1)
    assert (await bench.run()).outcomes == {"applied": 2}
    await bench.enqueue("update", "order-1", {"TITLE": "one!"}, version=2)
    await bench.enqueue("update", "order-1", {"TITLE": "old"}, version=1)
    await bench.run()

    report = await lookup(bench.redis, bench.settings, "deal", "order-1")
    (deal,) = [d for d in await bench.entities() if d["ORIGIN_ID"] == "order-1"]
    assert report.bitrix_id == int(deal["ID"])
    assert (report.state, report.version) == ("active", 2)
    assert [(o.op, o.outcome, o.reason) for o in report.outcomes] == [
        ("update", "skipped", "stale"),
        ("update", "applied", "updated"),
        ("create", "applied", "created"),
    ]
    assert report.outcomes[-1].stream_id == first
    assert report.outcomes[-1].bitrix_id == report.bitrix_id
    assert (report.waiting, report.dead_letters, report.outcomes_truncated) == ([], [], False)
    assert report.portal_link == f"{bench.emulator.base_url}/crm/deal/details/{report.bitrix_id}/"
    assert "emulator-secret" not in json.dumps(report.as_json())

    capped = await lookup(bench.redis, bench.settings, "deal", "order-1", scan_cap=2)
    assert (capped.outcomes_scanned, capped.outcomes_truncated, len(capped.outcomes)) == (2, True, 2)
    assert not (await lookup(bench.redis, bench.settings, "contact", "order-1")).found


async def test_dead_letters_and_search_by_stream_id(bench: Bench) -> None:
    bench.with_settings(retries_invalid_data=0)
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "invalid"}])
    origin = await bench.enqueue("create", "order-bad", {"TITLE": "bad"})
    await bench.run()
    report = await lookup(bench.redis, bench.settings, "deal", "order-bad")
    (entry,) = report.dead_letters
    assert entry.error_class == "invalid_data"
    assert entry.error["stream_id"] == origin
    assert [(o.outcome, o.error_class) for o in report.outcomes] == [("dead_lettered", "invalid_data")]
    assert (report.state, report.bitrix_id) == ("failed", None)  # the create applied nothing

    assert await find_stream_id(bench.redis, bench.settings, origin) == ("deal", "order-bad")
    assert await find_stream_id(bench.redis, bench.settings, entry.id) == ("deal", "order-bad")
    assert await find_stream_id(bench.redis, bench.settings, "1-1") is None
    await bench.redis.delete(bench.settings.keys.outcomes)  # found through the dead letter's error then
    assert await find_stream_id(bench.redis, bench.settings, origin) == ("deal", "order-bad")


async def test_unfinished_operations_unread_pending_parked_and_scheduled(bench: Bench) -> None:
    s = bench.settings
    ids = [
        await bench.enqueue(op, "order-w", {"TITLE": op}, version=v)
        for v, op in enumerate(["create", "delete"])
    ]
    await bench.enqueue("create", "order-other")
    report = await lookup(bench.redis, s, "deal", "order-w")
    assert [(w.where, w.stream_id, w.op) for w in report.waiting] == [
        ("stream", ids[0], "create"),
        ("stream", ids[1], "delete"),
    ]
    queue = OperationQueue(bench.redis, s.keys, group=s.group, consumer="c1")
    await queue.ensure_group()
    (claimed, _), (rest, _) = await queue.claim(1), await queue.claim(10)  # the delete waits its turn
    assert [e.id for e in claimed] == [ids[0]]
    assert [e.ident for e in rest] == ["deal:order-other"]
    report = await lookup(bench.redis, s, "deal", "order-w")
    assert [(w.where, w.stream_id, w.consumer) for w in report.waiting] == [
        ("pending", ids[0], "c1"),
        ("parked", ids[1], None),
    ]
    payload = claimed[0].fields["payload"].decode()
    unit = {"ident": "deal:order-w", "members": [{"origin": ids[0], "payload": payload}], "history": [
        {"kind": "attempt", "class": "server_error"}]}  # fmt: skip
    settled = Settlement([ids[0]], "deal:order-w", "retry", 60_000, ids[0], json.dumps(unit))
    assert await queue.settle([settled]) == [True]
    report = await lookup(bench.redis, s, "deal", "order-w")
    scheduled, parked = report.waiting
    assert (scheduled.where, scheduled.stream_id, scheduled.attempts) == ("scheduled", ids[0], 1)
    assert scheduled.due_at_ms is not None
    assert scheduled.due_at_ms > int(ids[0].split("-")[0])
    assert parked.where == "parked"
    assert await find_stream_id(bench.redis, s, ids[0]) == ("deal", "order-w")


async def test_edited_replay_is_applied_and_keeps_the_original_in_history(bench: Bench) -> None:
    bench.with_settings(retries_invalid_data=0)
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "invalid"}])
    await bench.enqueue("create", "order-e", {"TITLE": "typo"})
    await bench.run()
    await bench.admin.clear_faults()
    dead = DeadLetters(bench.redis, bench.settings.keys)
    (entry,) = await dead.entries()
    with pytest.raises(Exception, match="op"):
        await dead.replay_edited(entry, '{"op": "explode", "entity": "deal", "key": "order-e"}')
    fixed = json.dumps({"op": "create", "entity": "deal", "key": "order-e", "fields": {"TITLE": "fixed"}})
    assert await dead.replay_edited(entry, fixed, by="test") is not None
    assert await dead.replay_edited(entry, fixed) is None  # gone: replayed once only
    assert (await bench.run()).outcomes == {"applied": 1}
    (deal,) = await bench.entities()
    assert deal["TITLE"] == "fixed"
    report = await lookup(bench.redis, bench.settings, "deal", "order-e")
    assert [o.outcome for o in report.outcomes] == ["applied", "dead_lettered"]


async def test_sync_wrapper_and_cli(bench: Bench) -> None:
    await bench.enqueue("create", "order-c", {"TITLE": "c"})
    await bench.run()
    s = bench.settings
    assert (await asyncio.to_thread(lookup_sync, s, "deal", "order-c")).state == "active"
    env = {env_name(k): str(v) for k, v in s.model_dump().items() if v is not None and k != "webhook_url"}
    env["BITRIX_WEBHOOK_URL"] = s.webhook.reveal()

    def cli(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), env=env)

    result = await asyncio.to_thread(cli, "lookup", "deal", "order-c", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["ident"], data["state"], data["outcomes"][0]["reason"]) == (
        "deal:order-c",
        "active",
        "created",
    )
    human = await asyncio.to_thread(cli, "lookup", "id", data["outcomes"][0]["stream_id"])
    assert human.exit_code == 0, human.output
    assert "deal:order-c" in human.stdout
    assert "created" in human.stdout
    assert "found by stream id" in human.stdout
    for args, code, message in [
        (["lookup", "invoice", "k"], 2, "entity 'invoice'"),
        (["lookup", "id", "nope"], 2, "not a stream id"),
        (["lookup", "id", "1-1"], 1, "stream id 1-1 not found"),
    ]:
        bad = await asyncio.to_thread(cli, *args)
        assert (bad.exit_code, "Traceback" in bad.output) == (code, False), bad.output
        assert message in bad.stderr
    assert "emulator-secret" not in result.stdout + human.stdout
