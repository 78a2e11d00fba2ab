"""The chaos run with orders: contacts, deals that refer to them by key and product rows, under the same
faults and SIGKILLs as ``chaos_run`` (10% of requests commit then time out, 5% answer 500).

Each order is a contact upsert (``customer-<n>``) and a deal upsert (``order-<n>``, ``CONTACT_ID`` =
``{"$ref": "contact:customer-<n>"}``, 1-3 product rows), enqueued back to back; about a third of the orders
are sent again later with new fields and a different row set. The audit: exactly one final outcome per
operation, no duplicate contact, deal or row, every deal linked to its own contact, every deal's rows equal
to the ``products`` of its last applied operation, and nothing left held, parked or scheduled.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from chaos_run import Processes, _finished, _wait_for_emulator, free_port, worker_settings

from bitrix_worker.emulator import EmulatorAdmin
from bitrix_worker.producer import build_operation, enqueue_many

PRODUCTS = ["Mug", "Plate", "Bowl", "Cup", "Spoon"]

Op = tuple[str, str, dict[str, Any], list[dict[str, Any]] | None]  # (entity, key, fields, products)


@dataclass(frozen=True)
class OrderScenario:
    orders: int
    seed: int
    workers: int = 3
    again_p: float = 0.35  # orders sent a second time (new fields, new rows)
    kill_every_s: tuple[float, float] = (1.0, 3.0)
    produce_s: float = 20.0
    deadline_s: float = 300.0


@dataclass
class OrderReport:
    scenario: OrderScenario
    plans: dict[int, list[Op]]
    enqueued: dict[str, tuple[int, int]]  # stream id -> (order, index into its plan)
    outcomes: list[dict[str, str]]
    dead: list[tuple[dict[str, Any], dict[str, Any]]]
    contacts: list[dict[str, Any]]
    deals: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    stats: dict[str, Any]
    leftovers: dict[str, int]
    kills: int
    duration_s: float
    drained: bool
    logs: list[Path] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        outcomes: dict[str, int] = defaultdict(int)
        for o in self.outcomes:
            outcomes[f"{o['outcome']}:{o.get('code', '')}"] += 1
        return {
            "seed": self.scenario.seed,
            "orders": self.scenario.orders,
            "ops": len(self.enqueued),
            "kills": self.kills,
            "duration_s": round(self.duration_s, 1),
            "outcomes": dict(outcomes),
            "contacts": len(self.contacts),
            "deals": len(self.deals),
            "rows": len(self.rows),
            "http_requests": self.stats.get("requests", 0),
            "faults_injected": self.stats.get("faults_injected", {}),
            "leftovers": self.leftovers,
        }


def _rows(rng: random.Random) -> list[dict[str, Any]]:
    names = rng.sample(PRODUCTS, rng.randint(1, 3))
    return [{"PRODUCT_NAME": n, "PRICE": rng.randint(1, 50), "QUANTITY": rng.randint(1, 5)} for n in names]


def make_order_plans(s: OrderScenario, rng: random.Random) -> dict[int, list[Op]]:
    plans: dict[int, list[Op]] = {}
    for n in range(s.orders):
        ref = {"$ref": f"contact:customer-{n}"}
        ops: list[Op] = []
        for v in range(2 if rng.random() < s.again_p else 1):
            ops.append(("contact", f"customer-{n}", {"NAME": f"Customer {n} v{v}"}, None))
            ops.append(("deal", f"order-{n}", {"TITLE": f"Order {n} v{v}", "CONTACT_ID": ref}, _rows(rng)))
        plans[n] = ops
    return plans


def interleave(plans: dict[int, list[Op]], rng: random.Random) -> list[tuple[int, int]]:
    """A random global order that keeps each order's own order (contact before its deal)."""
    cursors = dict.fromkeys(plans, 0)
    bag = [n for n, ops in plans.items() for _ in ops]
    rng.shuffle(bag)
    out = []
    for n in bag:
        out.append((n, cursors[n]))
        cursors[n] += 1
    return out


async def run_order_chaos(s: OrderScenario, *, redis_url: str, prefix: str, tmp: Path) -> OrderReport:
    rng = random.Random(s.seed)
    plans = make_order_plans(s, rng)
    order = interleave(plans, rng)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    procs = Processes(tmp)
    client = aioredis.Redis.from_url(redis_url)
    settings = worker_settings(base_url, redis_url, prefix, tmp, 10.0)
    enqueued: dict[str, tuple[int, int]] = {}
    kills, drained, started = 0, False, time.monotonic()
    try:
        procs.start_emulator(port, s.seed, 10.0)
        assert procs.emulator is not None
        await _wait_for_emulator(base_url, procs.emulator)
        for slot in range(s.workers):
            procs.start_worker(slot, settings)

        async def produce() -> None:
            chunk = 20
            pause = s.produce_s / max(1, len(order) / chunk)
            for start in range(0, len(order), chunk):
                part = order[start : start + chunk]
                ops = [
                    build_operation("upsert", e, k, f, products=p)
                    for n, i in part
                    for e, k, f, p in [plans[n][i]]
                ]
                ids = await enqueue_many(client, ops, stream=settings.stream)
                enqueued.update(zip(ids, part, strict=True))
                await asyncio.sleep(pause)

        producer = asyncio.create_task(produce())
        deadline = started + s.deadline_s
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(*s.kill_every_s))
            if producer.done() and await _finished(client, settings, len(enqueued)):
                drained = True
                break
            if not producer.done() or time.monotonic() < deadline - 30:
                slot = rng.randrange(s.workers)
                procs.kill(slot)
                kills += 1
                procs.start_worker(slot, settings)
        await producer
        while not drained and time.monotonic() < deadline + 30:
            drained = await _finished(client, settings, len(enqueued))
            await asyncio.sleep(0.25)
        duration = time.monotonic() - started
        procs.stop_workers()
        k = settings.keys
        outcomes = [
            {a.decode(): b.decode() for a, b in f.items()} for _, f in await client.xrange(k.outcomes)
        ]
        dead = [
            (json.loads(f[b"payload"]), json.loads(f[b"error"]))
            for _, f in await client.xrange(settings.dead_stream)
        ]
        pending = await client.xpending(k.stream, settings.group)
        leftovers = {
            "pending": int(pending["pending"]),
            "stream": int(await client.xlen(k.stream)),
            "scheduled": int(await client.zcard(k.schedule)),
            "holds": int(await client.hlen(k.holds)),
            "parked_queued": int(await client.hlen(k.parked)),
        }
        async with EmulatorAdmin(base_url) as admin:
            contacts = await admin.entities("contact")
            deals = await admin.entities("deal")
            rows = await admin.product_rows()
            stats = await admin.stats()
        return OrderReport(s, plans, enqueued, outcomes, dead, contacts, deals, rows, stats, leftovers,
                           kills, duration, drained, procs.logs)  # fmt: skip
    finally:
        procs.stop_workers()
        procs.stop_emulator()
        await client.aclose()


def audit_orders(r: OrderReport) -> list[str]:
    """Everything wrong with the run, one line each (empty: every order is as its operations say)."""
    problems: list[str] = [] if r.drained else ["the run did not drain before its deadline"]
    finals: dict[str, list[dict[str, str]]] = defaultdict(list)
    for o in r.outcomes:
        finals[o["stream_id"]].append(o)
    for sid, (n, i) in r.enqueued.items():
        if len(finals.get(sid, [])) != 1:
            problems.append(
                f"order {n} op #{i} ({sid}): {len(finals.get(sid, []))} final outcomes, expected 1"
            )
    applied = {
        (n, i)
        for sid, (n, i) in r.enqueued.items()
        if [o["outcome"] for o in finals.get(sid, [])] == ["applied"]
    }
    for entity, found in (("contact", r.contacts), ("deal", r.deals)):
        seen: dict[str, int] = defaultdict(int)
        for e in found:
            seen[str(e.get("ORIGIN_ID"))] += 1
        problems += [f"DUPLICATE: {c} {entity}s for {key}" for key, c in seen.items() if c > 1]
    contact_id = {str(c["ORIGIN_ID"]): str(c["ID"]) for c in r.contacts}
    rows_of: dict[int, list[tuple[str, float]]] = defaultdict(list)
    deal_ids = {int(d["ID"]) for d in r.deals}
    for row in r.rows:
        if row["ownerType"] != "D" or int(row["ownerId"]) not in deal_ids:
            problems.append(f"a row on an owner that is no order's deal: {row}")
        rows_of[int(row["ownerId"])].append((row["productName"], float(row["quantity"])))
    for d in r.deals:
        key = str(d["ORIGIN_ID"])
        n = int(key.removeprefix("order-"))
        if str(d.get("CONTACT_ID")) != contact_id.get(f"customer-{n}"):
            problems.append(
                f"{key}: CONTACT_ID {d.get('CONTACT_ID')} is not customer-{n}'s id "
                f"{contact_id.get(f'customer-{n}')}"
            )
        last = [i for i, op in enumerate(r.plans[n]) if op[0] == "deal" and (n, i) in applied]
        if not last:
            continue  # every deal operation was dead-lettered: an ambiguous create may still have landed
        want = [(p["PRODUCT_NAME"], float(p["QUANTITY"])) for p in r.plans[n][last[-1]][3] or []]
        if rows_of.get(int(d["ID"]), []) != want:
            problems.append(f"{key}: rows {rows_of.get(int(d['ID']))} != last operation's {want}")
    for n, ops in r.plans.items():
        if any(op[0] == "deal" and (n, i) in applied for i, op in enumerate(ops)) and not any(
            str(d["ORIGIN_ID"]) == f"order-{n}" for d in r.deals
        ):
            problems.append(f"order-{n}: a deal operation was applied but no deal exists")
    problems += [f"leftover {name}: {c}" for name, c in r.leftovers.items() if c]
    return problems
