"""The chaos run: worker processes killed at random while the emulator times out and fails, then an audit.

Everything runs as separate processes (the emulator too), as in production: the test process only produces,
kills, restarts and reads. ``run_chaos`` returns a ``Report``; ``audit`` checks it and says what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from harness import settings_env

from bitrix_worker.config import Settings, load_settings
from bitrix_worker.emulator import EmulatorAdmin
from bitrix_worker.operations import Entity, OpKind
from bitrix_worker.producer import build_operation, enqueue_many

CLI = ["-c", "from bitrix_worker.cli import main; main()"]
TIMEOUT_COMMIT_P = 0.10  # of HTTP requests: the portal commits, then the answer never comes
SERVER_ERROR_P = 0.05  # of HTTP requests and of batch commands: 500 INTERNAL_SERVER_ERROR, not run
READ_TIMEOUT_S = 2.0
HANG_S = 3.0  # > READ_TIMEOUT_S: the worker gives up first, as with a real portal
# The emulator's leaky bucket drain: 5x the cloud's 2/s so the bounded run fits in make test;
# CHAOS_DRAIN_PER_S=2 runs against the cloud's own limit.
DRAIN_PER_S = float(os.environ.get("CHAOS_DRAIN_PER_S", "10"))
BURST = 50  # the cloud's default bucket size


@dataclass(frozen=True)
class Scenario:
    ops: int
    keys: int
    seed: int
    workers: int = 3
    kill_every_s: tuple[float, float] = (1.0, 3.0)
    produce_s: float = 20.0  # the producer spreads its operations over this long
    deadline_s: float = 240.0  # the whole run (produce, kill, drain) must end within this
    drain_per_s: float = DRAIN_PER_S


@dataclass
class KeyPlan:
    key: str
    ops: list[tuple[str, int, dict[str, Any]]]  # (op, version, fields) in producer order
    late: set[int] = field(default_factory=set)  # indexes of old versions sent after a newer one
    invalid: set[int] = field(default_factory=set)  # indexes of updates with a misspelt field
    deleted: bool = False


@dataclass
class Report:
    scenario: Scenario
    plans: dict[str, KeyPlan]
    enqueued: dict[str, tuple[str, int]]  # stream id -> (key, index into its plan)
    outcomes: list[dict[str, str]]
    dead: list[tuple[dict[str, Any], dict[str, Any]]]
    entities: list[dict[str, Any]]
    stats: dict[str, Any]
    leftovers: dict[str, int]
    kills: int
    duration_s: float
    drained: bool
    logs: list[Path]

    def figures(self) -> dict[str, Any]:
        calls = self.stats.get("calls", {})
        per_method = {m: sum(c.values()) for m, c in sorted(calls.items())}
        by_outcome = Counter(o["outcome"] for o in self.outcomes)
        reasons = Counter(f"{o['outcome']}:{o['reason']}" for o in self.outcomes if o["outcome"] != "applied")
        origins = Counter(e.get("ORIGIN_ID") for e in self.entities)
        return {
            "seed": self.scenario.seed,
            "ops": len(self.enqueued),
            "keys": self.scenario.keys,
            "workers": self.scenario.workers,
            "kills": self.kills,
            "duration_s": round(self.duration_s, 1),
            "outcomes": dict(by_outcome),
            "not_applied_reasons": dict(reasons),
            "dead_letters": len(self.dead),
            "entities": len(self.entities),
            "duplicates": sum(n - 1 for n in origins.values() if n > 1),
            "http_requests": self.stats.get("requests", 0),
            "calls_by_method": per_method,
            "reconciliation_lookups": per_method.get("crm.deal.list", 0),
            "adopted": sum(1 for o in self.outcomes if o.get("reason") == "adopted existing entity"),
            "faults_injected": self.stats.get("faults_injected", {}),
            "leftovers": self.leftovers,
        }


def make_plans(scenario: Scenario, rng: random.Random) -> dict[str, KeyPlan]:
    """Per key: a create (version 0), versioned updates, now and then an old version sent late, maybe a
    delete last. Sizes vary around ops/keys and are trimmed to exactly ``scenario.ops`` in total."""
    keys = [f"chaos-{i:05d}" for i in range(scenario.keys)]
    per_key = scenario.ops // scenario.keys
    sizes = [per_key] * scenario.keys
    for i in range(scenario.ops - per_key * scenario.keys):
        sizes[i] += 1
    plans = {}
    for key, size in zip(keys, sizes, strict=True):
        plan = KeyPlan(key, [("create", 0, _fields(key, 0))])
        delete = size >= 3 and rng.random() < 0.1
        version = 0
        while len(plan.ops) < size - (1 if delete else 0):
            if version >= 2 and rng.random() < 0.08:
                old = rng.randint(1, version - 1)
                plan.late.add(len(plan.ops))
                plan.ops.append(("update", old, _fields(key, old)))
                continue
            version += 1
            if rng.random() < INVALID_P:
                plan.invalid.add(len(plan.ops))
                plan.ops.append(("update", version, _invalid(_fields(key, version))))
                continue
            plan.ops.append(("update", version, _fields(key, version)))
        if delete:
            plan.ops.append(("delete", version + 1, {}))
            plan.deleted = True
        plans[key] = plan
    return plans


INVALID_P = 0.02  # of updates: a misspelt user field, which field validation must refuse (never "applied")
PAYMENT_FIELD = {
    "name": "UF_CRM_PAYMENT_METHOD",
    "type": "enumeration",
    "label": "Payment method",
    "items": ["Cash", "Card", "Invoice"],
}  # added on the emulator's portal before the run; its items get the IDs 1000, 1001, 1002


def _fields(key: str, version: int) -> dict[str, Any]:
    """Fields of several types, so the audit can check each one is stored as sent."""
    return {
        "TITLE": f"{key} v{version}",
        "COMMENTS": f"version {version} of {key}",
        "OPPORTUNITY": f"{version}.50",
        "CURRENCY_ID": ("EUR", "USD", "RUB")[version % 3],
        "BEGINDATE": f"2026-01-{version % 28 + 1:02d}",
        "UF_CRM_PAYMENT_METHOD": str(1000 + version % 3),
    }


def _invalid(fields: dict[str, Any]) -> dict[str, Any]:
    """The same update with the user field's name misspelt: Bitrix24 would drop it silently."""
    out = {k: v for k, v in fields.items() if k != "UF_CRM_PAYMENT_METHOD"}
    return out | {"UF_CRM_PAYMENT_METHD": fields["UF_CRM_PAYMENT_METHOD"]}


def interleave(plans: dict[str, KeyPlan], rng: random.Random) -> list[tuple[str, int]]:
    """A random global order that keeps each key's own order (what many producers would look like)."""
    cursors = dict.fromkeys(plans, 0)
    bag = [k for k, p in plans.items() for _ in p.ops]
    rng.shuffle(bag)
    order = []
    for key in bag:
        order.append((key, cursors[key]))
        cursors[key] += 1
    return order


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Processes:
    """The emulator and the worker processes, with their logs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.emulator: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    def start_emulator(self, port: int, seed: int, drain_per_s: float) -> None:
        faults = {
            "hang_s": HANG_S,
            "rules": [
                {
                    "method": "*",
                    "kind": "timeout_commit",
                    "probability": TIMEOUT_COMMIT_P,
                    "scope": "request",
                },
                {"method": "*", "kind": "500", "probability": SERVER_ERROR_P, "scope": "any"},
            ],
        }
        args = ["emulator", "--port", str(port), "--burst", str(BURST), "--drain", str(drain_per_s)]
        args += ["--faults", json.dumps(faults), "--seed", str(seed)]
        log = self.tmp / "emulator.log"
        self.logs.append(log)
        self.emulator = subprocess.Popen(
            [sys.executable, *CLI, *args], stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    def start_worker(self, slot: int, settings: Settings) -> None:
        log = self.tmp / f"worker-{slot}.log"
        if log not in self.logs:
            self.logs.append(log)
        env = settings_env(settings, consumer=f"chaos-w{slot}")
        self.workers[slot] = subprocess.Popen(
            [sys.executable, *CLI, "run"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    def kill(self, slot: int) -> None:
        proc = self.workers[slot]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_workers(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_emulator(self) -> None:
        if self.emulator is not None and self.emulator.poll() is None:
            self.emulator.terminate()
            try:
                self.emulator.wait(10)
            except subprocess.TimeoutExpired:
                self.emulator.kill()
                self.emulator.wait(5)


def worker_settings(base_url: str, redis_url: str, prefix: str, tmp: Path, drain_per_s: float) -> Settings:
    return load_settings(
        webhook_url=f"{base_url}/rest/1/emulator-secret/",
        redis_url=redis_url,
        database_url=f"sqlite+aiosqlite:///{tmp / 'mapping.sqlite3'}",
        stream=f"{prefix}:ops",
        dead_stream=f"{prefix}:dead",
        group="chaos",
        rate_burst=BURST,
        rate_per_s=drain_per_s,
        read_timeout_s=READ_TIMEOUT_S,
        portal_request_timeout_s=HANG_S,  # the emulator finishes every request within hang_s
        connect_timeout_s=1.0,
        claim_idle_ms=2000,
        block_ms=200,
        backoff_base_s=0.2,
        backoff_max_s=2.0,
        rate_limit_backoff_base_s=0.2,
        shutdown_grace_s=5.0,
        outcomes_maxlen=1_000_000,
        http_port=0,
    )


async def _wait_for_emulator(base_url: str, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"emulator exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{base_url}/_emulator/stats", timeout=1)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("emulator did not start")


async def run_chaos(scenario: Scenario, *, redis_url: str, prefix: str, tmp: Path) -> Report:
    rng = random.Random(scenario.seed)
    plans = make_plans(scenario, rng)
    order = interleave(plans, rng)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    procs = Processes(tmp)
    client = aioredis.Redis.from_url(redis_url)
    settings = worker_settings(base_url, redis_url, prefix, tmp, scenario.drain_per_s)
    enqueued: dict[str, tuple[str, int]] = {}
    kills = 0
    started = time.monotonic()
    drained = False
    try:
        procs.start_emulator(port, scenario.seed, scenario.drain_per_s)
        assert procs.emulator is not None
        await _wait_for_emulator(base_url, procs.emulator)
        async with EmulatorAdmin(base_url) as admin:
            await admin.add_field("deal", **PAYMENT_FIELD)
        for slot in range(scenario.workers):
            procs.start_worker(slot, settings)

        async def produce() -> None:
            chunk = 25
            pause = scenario.produce_s / max(1, len(order) / chunk)
            for start in range(0, len(order), chunk):
                part = order[start : start + chunk]
                ops = [
                    build_operation(OpKind(o), Entity.DEAL, k, f, v)
                    for k, i in part
                    for o, v, f in [plans[k].ops[i]]
                ]
                ids = await enqueue_many(client, ops, stream=settings.stream)
                enqueued.update(zip(ids, part, strict=True))
                await asyncio.sleep(pause)

        producer = asyncio.create_task(produce())
        deadline = started + scenario.deadline_s
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(*scenario.kill_every_s))
            if producer.done() and await _finished(client, settings, len(enqueued)):
                drained = True
                break
            if not producer.done() or time.monotonic() < deadline - 30:
                slot = rng.randrange(scenario.workers)
                procs.kill(slot)
                kills += 1
                procs.start_worker(slot, settings)
        await producer
        if not drained:  # stop killing for the last 30 s: the survivors drain what is left
            while time.monotonic() < deadline + 30:
                if await _finished(client, settings, len(enqueued)):
                    drained = True
                    break
                await asyncio.sleep(0.25)
        duration = time.monotonic() - started
        procs.stop_workers()
        return await _collect(
            scenario=scenario,
            plans=plans,
            enqueued=enqueued,
            client=client,
            settings=settings,
            base_url=base_url,
            procs=procs,
            kills=kills,
            duration=duration,
            drained=drained,
        )
    finally:
        procs.stop_workers()
        procs.stop_emulator()
        await client.aclose()


async def _finished(client: aioredis.Redis, settings: Settings, total: int) -> bool:
    k = settings.keys
    async with client.pipeline(transaction=False) as pipe:
        pipe.xlen(k.outcomes)
        pipe.xlen(k.stream)
        pipe.zcard(k.schedule)
        pipe.hlen(k.holds)
        outcomes, length, scheduled, held = await pipe.execute()
    return int(outcomes) >= total and int(length) == 0 and int(scheduled) == 0 and int(held) == 0


async def _collect(
    *,
    scenario: Scenario,
    plans: dict[str, KeyPlan],
    enqueued: dict[str, tuple[str, int]],
    client: aioredis.Redis,
    settings: Settings,
    base_url: str,
    procs: Processes,
    kills: int,
    duration: float,
    drained: bool,
) -> Report:
    k = settings.keys
    outcomes = [{a.decode(): b.decode() for a, b in f.items()} for _, f in await client.xrange(k.outcomes)]
    dead = [
        (json.loads(f[b"payload"]), json.loads(f[b"error"]))
        for _, f in await client.xrange(settings.dead_stream)
    ]
    parked = [key async for key in client.scan_iter(match=k.legacy_parked("") + "*", count=1000)]
    pending = await client.xpending(k.stream, settings.group)
    leftovers = {
        "pending": int(pending["pending"]),
        "stream": int(await client.xlen(k.stream)),
        "scheduled": int(await client.zcard(k.schedule)),
        "schedule_data": int(await client.hlen(k.schedule_data)),
        "holds": int(await client.hlen(k.holds)),
        "parked_lists": len(parked),
        "parked_queued": int(await client.hlen(k.parked)),
    }
    async with EmulatorAdmin(base_url) as admin:
        entities = await admin.entities("deal")
        stats = await admin.stats()
    return Report(
        scenario,
        plans,
        enqueued,
        outcomes,
        dead,
        entities,
        stats,
        leftovers,
        kills,
        duration,
        drained,
        procs.logs,
    )


def audit(r: Report) -> list[str]:
    """Everything wrong with the run, one line each (empty: exactly-once held)."""
    problems: list[str] = []
    if not r.drained:
        problems.append("the run did not drain before its deadline")
    finals: dict[str, list[dict[str, str]]] = defaultdict(list)
    for o in r.outcomes:
        finals[o["stream_id"]].append(o)
    for sid, (key, i) in r.enqueued.items():
        got = finals.get(sid, [])
        if len(got) != 1:
            problems.append(f"{key} op #{i} ({sid}): {len(got)} final outcomes, expected exactly 1")
        elif got[0]["outcome"] not in ("applied", "skipped", "dead_lettered"):
            problems.append(f"{key} op #{i} ({sid}): unknown outcome {got[0]['outcome']!r}")
        elif got[0]["outcome"] != "applied" and not got[0].get("reason"):
            problems.append(f"{key} op #{i} ({sid}): {got[0]['outcome']} without a reason")
    for sid in set(finals) - set(r.enqueued):
        problems.append(f"outcome for an id that was never enqueued: {sid}")
    dead_ids = {e.get("stream_id") for _, e in r.dead}
    for sid, got in finals.items():
        if got[0]["outcome"] == "dead_lettered" and sid not in dead_ids:
            problems.append(f"{sid} dead-lettered in the outcomes but missing from the dead-letter stream")
    for _, error in r.dead:
        if not error.get("reason"):
            problems.append(f"dead letter {error.get('stream_id')} has no reason")
    problems += _audit_entities(r, finals)
    problems += [f"leftover {name}: {n}" for name, n in r.leftovers.items() if n]
    return problems


def _audit_entities(r: Report, finals: dict[str, list[dict[str, str]]]) -> list[str]:
    problems = []
    ids = {(key, i): sid for sid, (key, i) in r.enqueued.items()}

    def outcome(key: str, i: int) -> str:
        got = finals.get(ids.get((key, i), ""), [])
        return got[0]["outcome"] if got else "missing"

    by_origin: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in r.entities:
        by_origin[str(e.get("ORIGIN_ID"))].append(e)
    for origin, rows in by_origin.items():
        if len(rows) > 1:
            problems.append(f"DUPLICATE: {len(rows)} deals for {origin} (ids {[e['ID'] for e in rows]})")
        if origin not in r.plans:
            problems.append(f"a deal nobody asked for: ORIGIN_ID={origin}")
    for key, plan in r.plans.items():
        live = [(i, op) for i, op in enumerate(plan.ops) if outcome(key, i) != "dead_lettered"]
        gone = outcome(key, 0) == "dead_lettered" or any(op[0] == "delete" for _, op in live)
        rows = by_origin.get(key, [])
        if gone:
            if rows:
                problems.append(f"{key}: deleted (or never created) but {len(rows)} deal(s) exist")
            continue
        if not rows:
            problems.append(f"{key}: created and not deleted, but no deal exists")
            continue
        # what the entity must hold: the newest *applied* operation (a skipped one writes nothing; with
        # invalid data, an old version can be skipped as stale behind a newer one that was dead-lettered)
        applied = [op for i, op in enumerate(plan.ops) if outcome(key, i) == "applied"]
        if not applied:
            problems.append(f"{key}: exists but none of its operations was applied")
            continue
        _, version, fields = max(applied, key=lambda op: op[1])
        got = {name: rows[0].get(name) for name in fields}
        if got != fields:  # every field of the last applied operation is stored, as sent
            problems.append(f"{key}: fields {got} != newest applied version v{version} {fields}")
        for i in plan.invalid:
            got_i = finals.get(ids.get((key, i), ""), [{}])[0]
            if got_i.get("outcome") == "applied":
                problems.append(f"{key} op #{i}: a misspelt field was reported applied (Bitrix24 drops it)")
        for i in plan.late:
            newer_dead = any(
                op[1] > plan.ops[i][1] and outcome(key, j) == "dead_lettered" for j, op in enumerate(plan.ops)
            )
            got_i = finals.get(ids.get((key, i), ""), [{}])[0]
            if not newer_dead and (got_i.get("outcome"), got_i.get("reason")) != ("skipped", "stale"):
                problems.append(
                    f"{key} op #{i}: late old version v{plan.ops[i][1]} ended {got_i}, not skipped:stale"
                )
    return problems


def trace(r: Report, key: str, *, log_lines: int = 40) -> str:
    """What happened to one key: its operations, their final outcomes, and the workers' log lines about it."""
    ids = {(k, i): sid for sid, (k, i) in r.enqueued.items()}
    lines = [f"--- {key}"]
    by_sid = {o["stream_id"]: o for o in r.outcomes}
    for i, (op, version, _) in enumerate(r.plans[key].ops):
        sid = ids.get((key, i), "?")
        o = by_sid.get(sid, {})
        lines.append(
            f"  #{i} {op} v{version} {sid}: {o.get('outcome')} {o.get('reason')} attempts={o.get('attempts')}"
        )
    found = []
    for log in r.logs:
        if log.exists():
            found += [
                f"  {log.name}: {line}"
                for line in log.read_text(errors="replace").splitlines()
                if key in line
            ]
    lines += found[-log_lines:]
    return "\n".join(lines)
