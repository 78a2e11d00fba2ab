"""Many portals served by multi-portal workers (``BITRIX_WORKER_PORTALS``), end to end over real Redis and
emulated portals on loopback (``MultiPortalServer``, one address per portal):

* operations for three portals are applied to the right portal's emulator, recorded in that portal's own
  mapping table; an unknown portal's stream and an operation on the wrong portal's stream are poison;
* a portal that refuses every connection (its breaker opens) does not slow the others;
* two worker processes divide the portals, and a killed one's portals move to the survivor, nothing lost;
* a portal given a backlog gets a process of its own, and goes back among the others once it has drained.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from harness import FAST, WORKER_CMD

from bitrix_worker.config import Settings, env_name, load_settings
from bitrix_worker.emulator import EmulatorConfig
from bitrix_worker.emulator.admin import EmulatorAdmin
from bitrix_worker.emulator.multi import MultiPortalServer
from bitrix_worker.fleet import PortalFleet, portal_settings
from bitrix_worker.mapping import MappingStore
from bitrix_worker.operations import Entity, OpKind
from bitrix_worker.portal_layout import assigned, portal_table
from bitrix_worker.portals.model import PlanLimits, PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key
from bitrix_worker.producer import build_operation, enqueue_many
from bitrix_worker.redis.deadletter import DeadLetters
from bitrix_worker.redis.producing import append_payloads

pytestmark = pytest.mark.timeout(180)

HOSTS = {"p-a": "127.0.0.2", "p-b": "127.0.0.3", "p-c": "127.0.0.4"}
FAST_PLAN = PlanLimits("test", 1000, 1000.0)


@dataclass
class Fleet:
    settings: Settings
    server: MultiPortalServer
    redis: aioredis.Redis
    registry: PortalRegistry
    key: str

    def deals(self, pid: str) -> list[dict[str, Any]]:
        return self.server.apps[HOSTS[pid]].portal.store.all("deal")

    async def enqueue(self, pid: str, keys: list[str]) -> None:
        ops = [build_operation(OpKind.CREATE, Entity.DEAL, k, {"TITLE": f"{pid}:{k}"}) for k in keys]
        await enqueue_many(self.redis, ops, stream=self.settings.stream, portal=pid)

    async def dead(self, pid: str) -> list[Any]:
        keys = portal_settings(self.settings, pid, None).keys
        return await DeadLetters(self.redis, keys).entries(limit=100)

    async def run_in_process(self, wanted: frozenset[str] | None = None) -> None:
        store = await MappingStore.connect(self.settings.database_url)
        try:
            await PortalFleet(self.settings, self.redis, store, self.registry, None, wanted).run(
                until_idle=True
            )
        finally:
            await store.close()

    def env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "REDIS_URL", "DATABASE_URL"))
        }
        for name, value in self.settings.model_dump().items():
            if value is None or name == "consumer":
                continue
            raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            env[env_name(name)] = str(raw).lower() if isinstance(raw, bool) else str(raw)
        env["BITRIX_WORKER_LOG_FORMAT"] = "json"
        return env


async def _register(registry: PortalRegistry, pid: str, url: str, plan: PlanLimits = FAST_PLAN) -> None:
    endpoint = url.split("/rest/", maxsplit=1)[0] + "/rest/"
    await registry.add(PortalRecord(pid, "webhook", endpoint, plan=plan, webhook_url=url))


@pytest.fixture
async def fleet(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    configs = {h: EmulatorConfig(seed=7, burst=1000, drain_per_s=1000) for h in HOSTS.values()}
    async with MultiPortalServer(configs) as server:
        key = new_key()
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'mapping.sqlite3'}"
        settings = load_settings(
            portals="all",
            secrets_key=key,
            redis_url=redis_url,
            database_url=database_url,
            stream=f"{key_prefix}:ops",
            dead_stream=f"{key_prefix}:dead",
            group="g",
            consumer=f"{key_prefix}-w",
            **FAST,
        )
        registry = await PortalRegistry.connect(database_url, box=SecretBox([key]))
        for pid, host in HOSTS.items():
            await _register(registry, pid, server.webhook_url(host))
        client = aioredis.Redis.from_url(redis_url)
        try:
            yield Fleet(settings, server, client, registry, key)
        finally:
            await registry.close()
            keys = [k async for k in client.scan_iter(match=f"*{key_prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def test_each_operation_reaches_its_own_portal(fleet: Fleet) -> None:
    f = fleet
    for pid in HOSTS:
        await f.enqueue(pid, [f"order-{n}" for n in range(30)])
    await f.enqueue("p-nope", ["lost-1", "lost-2"])  # no such portal in the registry
    wrong = json.dumps({"op": "create", "entity": "deal", "key": "x-1", "portal": "p-b"})
    a_stream = portal_settings(f.settings, "p-a", None).stream
    await append_payloads(f.redis, a_stream, [wrong])  # names p-b, but sits on p-a's stream

    await asyncio.wait_for(f.run_in_process(), timeout=60)

    for pid in HOSTS:
        deals = f.deals(pid)
        assert sorted(d["TITLE"] for d in deals) == sorted(f"{pid}:order-{n}" for n in range(30))
        assert len({d["ID"] for d in deals}) == 30
    unknown = await f.dead("p-nope")
    assert len(unknown) == 2
    assert all("not in the portal registry" in e.error["description"] for e in unknown), unknown[0].error
    misplaced = await f.dead("p-a")
    assert len(misplaced) == 1
    assert "names portal 'p-b'" in misplaced[0].error["description"]
    assert await f.dead("p-b") == []
    assert await f.dead("p-c") == []
    # each portal's mapping rows live in its own table: one key, three portals, three different ids
    store = await MappingStore.connect(f.settings.database_url)
    try:
        ids = set()
        for pid in HOSTS:
            table = await store.sibling(portal_table("bitrix_mapping", pid, None))
            row = await table.get("deal", "order-0")
            assert row is not None
            ids.add((pid, row.bitrix_id))
            assert {d["ID"] for d in f.deals(pid) if d["TITLE"] == f"{pid}:order-0"} == {str(row.bitrix_id)}
        assert len(ids) == 3
        assert await store.get("deal", "order-0") is None  # the default table holds none of them
    finally:
        await store.close()


async def test_a_deployment_serving_a_list_leaves_the_other_portals_alone(fleet: Fleet) -> None:
    f = fleet
    for pid in ("p-a", "p-b", "p-zz"):  # p-zz is in no registry
        await f.enqueue(pid, ["k-1", "k-2"])
    await asyncio.wait_for(f.run_in_process(frozenset({"p-a"})), timeout=60)
    assert len(f.deals("p-a")) == 2
    assert f.deals("p-b") == []
    for pid in ("p-b", "p-zz"):  # not this deployment's: neither served nor refused
        assert await f.dead(pid) == []
        assert await f.redis.xlen(portal_settings(f.settings, pid, None).stream) == 2


async def test_a_portal_that_refuses_every_connection_does_not_slow_the_others(fleet: Fleet) -> None:
    f = fleet
    plan = PlanLimits("slow", 10, 20.0)  # 20 requests/s, bucket of 10: the pace of a real paid portal
    for pid, host in HOSTS.items():
        await f.registry.add(
            PortalRecord(pid, "webhook", "x", plan=plan, webhook_url=f.server.webhook_url(host)),
            replace=True,
        )
    await _register(f.registry, "p-down", "http://127.0.0.9:9/rest/1/secret/", plan)  # nothing listens
    n = 300  # single operations per portal -> batches of up to 50: a handful of requests each
    for pid in ("p-a", "p-b", "p-down"):
        await f.enqueue(pid, [f"k-{i}" for i in range(n)])
    s = f.settings.model_copy(update={"batch_size": 1})  # one operation per request: the rate is the limit
    store = await MappingStore.connect(s.database_url)
    fl = PortalFleet(s, f.redis, store, f.registry)
    task = asyncio.create_task(fl.run())
    started = time.monotonic()
    try:
        while len(f.deals("p-a")) < n or len(f.deals("p-b")) < n:
            assert time.monotonic() - started < 90, (len(f.deals("p-a")), len(f.deals("p-b")))
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
    finally:
        fl.stop()
        await asyncio.wait_for(task, 30)
        await store.close()
    ideal = (n - plan.burst) / (plan.rate_per_s * s.rate_fraction)
    assert elapsed < ideal * 1.5 + 2, f"{elapsed:.1f}s for what the limit allows in {ideal:.1f}s"
    assert await f.dead("p-down") == []  # the down portal's operations wait; nothing is dead-lettered


async def test_a_busy_portal_gets_a_process_of_its_own_then_rejoins_the_others(fleet: Fleet) -> None:
    """Two fleets (two processes' worth, in one event loop): p-a's backlog keeps its claims full, so it is
    marked busy and served alone while the other fleet serves the five quiet portals; once drained and
    quiet for a while it is placed by plain rendezvous again, and its operations were applied once each."""
    f = fleet
    slow = PlanLimits("slow", 10, 20.0)
    url = f.server.webhook_url(HOSTS["p-a"])
    await f.registry.add(PortalRecord("p-a", "webhook", "x", plan=slow, webhook_url=url), replace=True)
    for pid in ("p-d", "p-e", "p-f"):
        await _register(f.registry, pid, f.server.webhook_url(HOSTS["p-b"]))
    pids = ["p-a", "p-b", "p-c", "p-d", "p-e", "p-f"]
    n = 1200  # batches of 5 at 20 requests/s: about 12 s of full claims
    await f.enqueue("p-a", [f"hot-{i}" for i in range(n)])
    names = ["w-one", "w-two"]
    store = await MappingStore.connect(f.settings.database_url)
    update = {"batch_size": 5, "portal_busy_after_s": 1.0, "portal_quiet_after_s": 2.0}
    fleets = [
        PortalFleet(f.settings.model_copy(update=update | {"consumer": c}), f.redis, store, f.registry)
        for c in names
    ]
    tasks = [asyncio.create_task(fl.run()) for fl in fleets]

    def shares() -> list[set[str]]:
        return [set(fl.served) for fl in fleets]

    try:
        await _until(lambda: sorted(map(sorted, shares())) == [["p-a"], pids[1:]], 20)
        assert len(f.deals("p-a")) < n, "p-a drained before it was seen alone: the test proves nothing"
        assert all(fl.busy == {"p-a"} for fl in fleets)
        for pid in pids[1:]:  # the quiet portals are served meanwhile
            await f.enqueue(pid, [f"{pid}-quiet-{i}" for i in range(3)])
        await _until(lambda: len(f.deals("p-a")) >= n, 60)
        plain = [set(assigned(pids, names, c)) for c in names]
        await _until(lambda: shares() == plain and not any(fl.busy for fl in fleets), 20)
    finally:
        for fl in fleets:
            fl.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await store.close()
    titles = [d["TITLE"] for d in f.deals("p-a")]
    assert len(titles) == len(set(titles)) == n  # nothing twice across the hand-overs
    quiet = [d["TITLE"] for h in ("p-b", "p-c") for d in f.deals(h) if "-quiet-" in d["TITLE"]]
    assert sorted(quiet) == sorted(f"{p}:{p}-quiet-{i}" for p in pids[1:] for i in range(3))
    assert await f.redis.zcard(f.settings.keys.fleet + ":busy") == 0  # the board is empty again


async def _start(f: Fleet, name: str, log: Path) -> asyncio.subprocess.Process:
    env = f.env() | {"BITRIX_WORKER_CONSUMER": name}
    return await asyncio.create_subprocess_exec(
        sys.executable, *WORKER_CMD, env=env, stdout=log.open("wb"), stderr=asyncio.subprocess.STDOUT
    )


async def test_two_processes_divide_portals_and_the_survivor_takes_over(fleet: Fleet, tmp_path: Path) -> None:
    f = fleet
    for pid in ("p-d", "p-e", "p-f"):  # six portals: both processes get some (rendezvous, 1 in 32 not)
        await _register(f.registry, pid, f.server.webhook_url(HOSTS["p-a"]))
    pids = [*HOSTS, "p-d", "p-e", "p-f"]
    one = await _start(f, "w-one", tmp_path / "one.log")
    two = await _start(f, "w-two", tmp_path / "two.log")
    try:
        for pid in pids:
            await f.enqueue(pid, [f"{pid}-first-{i}" for i in range(20)])
        await _until(lambda: _applied(f) >= 20 * len(pids), 60)
        # each starts alone and serves everything; within a few heartbeats they split the portals
        await _until(lambda: _divided(tmp_path, set(pids)), 40)
        served = {w: _served(tmp_path / f"{w}.log") for w in ("one", "two")}
        assert served["one"], served  # both processes took a share
        assert served["two"], served
        one.send_signal(signal.SIGKILL)
        await one.wait()
        for pid in pids:
            await f.enqueue(pid, [f"{pid}-second-{i}" for i in range(20)])
        await _until(lambda: _applied(f) >= 40 * len(pids), 60)
        assert served["one"] <= _served(tmp_path / "two.log")  # the survivor serves the dead one's portals
    finally:
        for proc in (one, two):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (one, two):
            await asyncio.wait_for(proc.wait(), 30)
    titles = [d["TITLE"] for h in set(HOSTS.values()) for d in f.server.apps[h].portal.store.all("deal")]
    assert len(titles) == len(set(titles)) == 40 * len(pids)  # nothing lost, nothing twice
    for pid in pids:
        assert await f.dead(pid) == []


def _applied(f: Fleet) -> int:
    return sum(len(f.server.apps[h].portal.store.all("deal")) for h in set(HOSTS.values()))


def _divided(logs: Path, pids: set[str]) -> bool:
    one, two = _served(logs / "one.log"), _served(logs / "two.log")
    return bool(one) and bool(two) and not one & two and one | two == pids


def _served(log: Path) -> set[str]:
    """Portals that process serves now: loops started (``worker started`` names the portal) minus those
    drained since (a process that starts alone serves everything until it sees the other one)."""
    found: set[str] = set()
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        portal = record.get("portal")
        if record.get("event") == "worker started" and portal:
            found.add(portal)
        elif record.get("event", "").startswith("portal moves") and portal:
            found.discard(portal)
    return found


async def _until(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def test_cli_enqueue_status_and_dlq_per_portal(redis_url: str, key_prefix: str) -> None:
    from typer.testing import CliRunner

    from bitrix_worker.cli import app

    env = {
        "REDIS_URL": redis_url,
        "BITRIX_WORKER_STREAM": f"{key_prefix}:ops",
        "BITRIX_WORKER_DEAD_STREAM": f"{key_prefix}:dead",
        "BITRIX_WEBHOOK_URL": "https://default.example.com/rest/1/s3cr3t-hook/",
        "DATABASE_URL": "sqlite+aiosqlite:///does-not-exist/mapping.sqlite3",
    }
    runner = CliRunner()

    def status(*extra: str) -> dict[str, Any]:
        result = runner.invoke(app, ["status", "--json", *extra], env=env)
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.output))

    try:
        for args in (["--portal", "acme"], ["--portal", "acme"], ["--portal", "default.example.com"], []):
            result = runner.invoke(app, ["enqueue", "create", "deal", "k-1", *args], env=env)
            assert result.exit_code == 0, result.output
        acme = status("--portal", "acme")
        assert acme["stream"] == f"{key_prefix}:ops:acme"
        assert acme["queue"]["stream_length"] == 2
        assert acme["portal"] == "acme"
        default = status()  # the default portal (the webhook's host) keeps the stream itself
        assert default["stream"] == f"{key_prefix}:ops"
        assert default["queue"]["stream_length"] == 2
        listed = runner.invoke(app, ["dlq", "list", "--json", "--portal", "acme"], env=env)
        assert (listed.exit_code, json.loads(listed.output)) == (0, [])
        bad = runner.invoke(app, ["status", "--portal", "{x}"], env=env)
        assert bad.exit_code == 2
        assert "--portal" in bad.output
    finally:
        import redis as sync_redis

        client = sync_redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"*{key_prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


def test_the_sync_producer_writes_a_portal_stream_too(redis_url: str, key_prefix: str) -> None:
    import redis as sync_redis

    from bitrix_worker.sync_producer import enqueue_many_sync, enqueue_sync

    client = sync_redis.Redis.from_url(redis_url)
    stream = f"{key_prefix}:ops"
    try:
        op = build_operation(OpKind.CREATE, Entity.DEAL, "k-1")
        enqueue_sync(client, op, stream=stream, portal="acme")
        enqueue_many_sync(client, [op, op], stream=stream, portal="acme")
        enqueue_sync(client, op, stream=stream, portal="main", default_portal="main")
        rows = client.xrange(f"{stream}:acme")
        assert len(rows) == 3
        assert all(json.loads(f[b"payload"])["portal"] == "acme" for _, f in rows)
        assert client.smembers(f"{{{stream}}}:portals") == {b"acme"}
        assert client.xlen(stream) == 1  # the default portal keeps the stream itself
    finally:
        keys = list(client.scan_iter(match=f"*{key_prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


async def test_a_lone_operation_on_a_running_fleet_is_applied_at_once(fleet: Fleet) -> None:
    """A portal's loop waits for work between lone operations; it must keep running (a loop that failed is
    restarted only at the next heartbeat, seconds later), so each lone operation is applied promptly."""
    f = fleet
    s = f.settings.model_copy(update={"heartbeat_interval_s": 30.0})  # no restart would hide a failed loop
    store = await MappingStore.connect(s.database_url)
    fl = PortalFleet(s, f.redis, store, f.registry)
    task = asyncio.create_task(fl.run())
    try:
        await asyncio.sleep(1.5)  # every loop has claimed nothing and waits for work
        for n in range(3):
            started = time.monotonic()
            await f.enqueue("p-a", [f"lone-{n}"])
            while len(f.deals("p-a")) < n + 1:
                assert time.monotonic() - started < 2.5, f"lone operation {n} not applied in 2.5 s"
                await asyncio.sleep(0.02)
        assert all(not served.task.done() for served in fl.served.values())
    finally:
        fl.stop()
        await asyncio.wait_for(task, 30)
        await store.close()


async def test_a_quiet_fleet_loop_still_retries_on_time_and_stops_at_once(fleet: Fleet) -> None:
    """A quiet portal's loop blocks up to 10 s for new entries and polls its retry schedule once a second
    (``pacing``): a retry that falls due must still be applied within about a second, and a stop must end
    the long waits at once instead of after them."""
    f = fleet
    s = f.settings.model_copy(update={"heartbeat_interval_s": 30.0, "block_ms": 100})
    store = await MappingStore.connect(s.database_url)
    fl = PortalFleet(s, f.redis, store, f.registry)
    admin = EmulatorAdmin(f.server.base_url(HOSTS["p-b"]))
    await admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["500"]}])
    task = asyncio.create_task(fl.run())
    try:
        await asyncio.sleep(1.5)  # every loop has claimed nothing and waits for work
        started = time.monotonic()
        await f.enqueue("p-b", ["retried"])
        while not f.deals("p-b"):
            assert time.monotonic() - started < 2.5, "a retried operation not applied in 2.5 s"
            await asyncio.sleep(0.02)
        assert (await admin.stats())["faults_injected"]  # it was retried, not applied at first
        await asyncio.sleep(0.5)  # back in its long wait
    finally:
        stopping = time.monotonic()
        fl.stop()
        await asyncio.wait_for(task, 30)
        await store.close()
        await admin.aclose()
    assert time.monotonic() - stopping < 3.0, "stopping waited for the loops' blocking reads"
