"""CPU per operation of the worker's per-operation code paths, in-process, beside an earlier commit's.

    python -m bench.cost_micro                      # today's code beside bench.cost.PREVIOUS_COMMIT
    python -m bench.cost_micro --previous <commit>  # beside another commit
    python -m bench.cost_micro --postgres           # the store's read and write on PostgreSQL too
    python -m bench.cost_micro --send               # one request of 50 updates to the emulator too

Why: the worker's cost per update (``bench.cost``) moves with the machine's load by ±20%, and it cannot say
which part of a change did what. Here each path runs alone on objects like the worker's (50 distinct
keys, one ``update`` each, a secret in the log configuration), timed by CPU time (``time.process_time``,
every thread of the process) as the best of 7 rounds. Each code version runs in a process of its own, the
two alternating ``--rounds`` times; the table gives the lowest figure of each. Nothing here talks to Redis,
HTTP or the portal; the store paths use a SQLite file in a temporary directory and, with ``--postgres``, a
table created and dropped in the test database (``BITRIX_WORKER_TEST_POSTGRES_URL``). ``--send`` adds the
path around one request: the method pauses and the limiter in Redis (``BENCH_REDIS_URL``), the batch built,
sent over loopback to an emulator in a process of its own (its CPU is not counted) and its answer classified.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import cost
from .common import Emulator, redis_url

BATCH = 50
_PROBE = r"""
import asyncio, json, os, sys, tempfile, time, timeit, uuid
sys.path.insert(0, sys.argv[1])
import structlog
from bitrix_worker.events import EventFanout, RunSummary, Tally
from bitrix_worker.intake import build_units
from bitrix_worker.logs import configure_logging
from bitrix_worker.mapping import MappingStore
from bitrix_worker.metrics import PrometheusEvents
from bitrix_worker.outcomes import Outcome, Result, settlement
from bitrix_worker.plan import Call
from bitrix_worker.reasons import Reason
from bitrix_worker.redis.streams import lua_json
from bitrix_worker.reporting import report
from bitrix_worker.values import Entry, Mapping

N = int(sys.argv[2])
out = {}
configure_logging(fmt="json", level="info", secrets=["0123456789abcdef"], stream=open(os.devnull, "w"))
log = structlog.get_logger("bitrix_worker.delivery")
entries = [
    Entry(f"1765000000000-{i}", f"deal:order-{i}", {"payload": json.dumps({"op": "update", "entity": "deal",
          "key": f"order-{i}", "fields": {"STAGE_ID": "WON", "COMMENTS": f"v{i}"}}).encode()})
    for i in range(N)
]
units, _ = build_units(entries, max_deliveries=5, at_ms=1765000001000)
results = [Result(u, Outcome.APPLIED, Reason.UPDATED, call=Call.UPDATE, bitrix_id=1000 + i,
                  mapping_state="active") for i, u in enumerate(units)]
events = EventFanout(Tally(RunSummary()), PrometheusEvents())
settled = [settlement(r, 1765000002000) for r in results]

def best(fn, number=200):
    fn()
    return min(timeit.repeat(fn, number=number, repeat=7, timer=time.process_time)) / number / N * 1e6

out["build_units"] = best(lambda: build_units(entries, max_deliveries=5, at_ms=1765000001000))
out["settlement"] = best(lambda: [settlement(r, 1765000002000) for r in results])
out["lua_json"] = best(lambda: lua_json([s.as_json() for s in settled]))
out["report"] = best(lambda: [report(r, 1765000002000, events=events, log=log) for r in results], 50)

async def store(url):
    s = await MappingStore.connect(url, table="bench_micro_" + uuid.uuid4().hex[:8])
    try:
        await s.record_many([Mapping("deal", f"k{i}", i, None, "active", 1) for i in range(2000)])
        keys = [("deal", f"k{i}") for i in range(2000)]
        rounds = []
        for rep in range(7):
            t0 = time.process_time()
            for j in range(0, 2000, N):
                await s.get_many(keys[j:j + N])
                rows = [Mapping("deal", f"k{i}", i, None, "active", 2 + rep) for i in range(j, j + N)]
                await s.record_many(rows)
            rounds.append((time.process_time() - t0) / 2000 * 1e6)
        return min(rounds)
    finally:
        if url.startswith("postgresql"):
            await s._runner.write(lambda c: c.exec_driver_sql(f'DROP TABLE IF EXISTS "{s.table_name}"'))
            await s._runner.write(lambda c: c.exec_driver_sql(f'DROP TABLE IF EXISTS "{s.table_name}_meta"'))
        await s.close()

with tempfile.TemporaryDirectory() as tmp:
    out["store_sqlite"] = asyncio.run(store(f"sqlite:///{tmp}/micro.sqlite3"))
if len(sys.argv) > 3:
    out["store_postgresql"] = asyncio.run(store(sys.argv[3]))
# the intake and outcome paths as the worker runs them per batch: claim.lua's reply (bytes, as redis-py
# gives it) -> entries -> units; each unit's update answered -> result -> mapping row + settle argument
from bitrix_worker.followups import write_result
from bitrix_worker.outcomes import mapping_row
from bitrix_worker.plan import Plan
from bitrix_worker.redis.streams import _entry
reply = [[e.id.encode(), e.ident.encode(), [b"payload", e.fields["payload"]], b""] for e in entries]
plans = [Plan(Call.UPDATE, 1000 + i) for i in range(N)]
def claimed():
    got = [_entry(i, ident, flat, whose) for i, ident, flat, whose in reply]
    return build_units(got, max_deliveries=5, at_ms=1765000001000)
def finished():
    done = [write_result(u, p, {"result": True}) for u, p in zip(units, plans)]
    rows = [row for r in done if (row := mapping_row(r, 7)) is not None]
    return rows, lua_json([settlement(r, 1765000002000).as_json() for r in done])
out["claim_to_units"] = best(claimed)
out["results_to_settle"] = best(finished)
from dataclasses import dataclass, field as _field
from bitrix_worker.config import load_settings
from bitrix_worker.emulator import EmulatorConfig
from bitrix_worker.emulator.portal import Portal
from bitrix_worker.plan import command_for, plan_unit
from bitrix_worker.redis.schemas import SchemaCache
from bitrix_worker.refs import targets_of
from bitrix_worker.schema import (EntitySchema, parse_categories, parse_currencies, parse_fields,
                                  parse_statuses, status_lists_needed)
from bitrix_worker.screening import Screening

emu = Portal(EmulatorConfig())  # the deal schema bench.cost's emulator serves, parsed as the worker does
answer = lambda method, **params: emu.call(method, params)[0].value
deal_fields = parse_fields(answer("crm.deal.fields"))
pipelines = parse_categories(answer("crm.category.list", entityTypeId=2))
schema = EntitySchema("deal", deal_fields, {n: parse_statuses(answer("crm.status.entity.items", entityId=n))
                      for n in status_lists_needed(deal_fields, pipelines)}, pipelines,
                      parse_currencies(answer("crm.currency.list")), fetched_at=time.time())
settings = load_settings(webhook_url="https://micro.bitrix24.com/rest/1/0123456789abcdef/")
schemas = SchemaCache(None, settings.keys, "micro.bitrix24.com", ttl_s=3600.0, memo_s=float("inf"))
schemas._memo["deal"] = (schema, time.time())  # what the first load of every 10 s leaves (no Redis here)

async def no_fetch(entity):
    raise AssertionError("the micro benchmark must not fetch a schema")

screening = Screening(settings, schemas, no_fetch, events=events)
known = {("deal", u.head.key): Mapping("deal", u.head.key, 1000 + i, None, "active", 1)
         for i, u in enumerate(units)}

@dataclass(slots=True)
class Pending:
    unit: object
    plan: object
    screened: dict = _field(default_factory=dict)

def plan_and_screen():
    keys = [(u.head.entity.value, u.head.key) for u in units]
    targets_of(units)
    pending = [Pending(u, plan_unit(u, known.get(k), originator_id="micro", recreate_deleted=False,
                                    known=known)) for u, k in zip(units, keys)]
    coro = screening.screen(pending, [])
    try:
        coro.send(None)  # a memo hit never suspends: no event loop needed
    except StopIteration as done:
        assert len(done.value) == N
        return [command_for(p.plan, p.unit.head.entity.spec) for p in done.value]
    raise AssertionError("screening suspended")

out["plan_screen"] = best(plan_and_screen)

def settled_batch():
    # the batch as delivery.finish reports it (report_settled; before it, report per result), with the
    # worker's subscribers and lean log records (tuning), restored afterwards
    import logging
    from bitrix_worker import reporting
    from bitrix_worker.logs import lean_records
    from bitrix_worker.stall import Progress
    saved = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    lean_records()
    worker_events = EventFanout(Tally(RunSummary()), Progress(), PrometheusEvents())
    now, oks = 1765000002000, [True] * len(results)
    if hasattr(reporting, "report_settled"):
        run = lambda: reporting.report_settled(results, oks, now, events=worker_events, log=log)
    else:
        run = lambda: [report(r, now, events=worker_events, log=log) for r in results]
    try:
        return best(run, 50)
    finally:
        logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing = saved

out["report_settled"] = settled_batch()

async def send_path(webhook, redis_url, rounds=7, number=20):
    # What the worker does around one request of N updates (delivery._send): the method pauses, the
    # limiter's slot, the marking step, the batch built, POSTed to the emulator and its answer classified.
    import random
    import redis.asyncio as aioredis
    from bitrix_worker.bitrix.client import BitrixClient
    from bitrix_worker.bitrix.marking import before_first_request, marking_transport
    from bitrix_worker.bitrix.methods import crm_add, crm_update
    from bitrix_worker.events import WorkerEvents
    from bitrix_worker.policy import RetryPolicy
    from bitrix_worker.redaction import WebhookUrl
    from bitrix_worker.redis.limits import Limiter, MethodPauses
    from bitrix_worker.sending import Answered, Sender
    prefix = "bench-micro-" + uuid.uuid4().hex[:8]
    redis = aioredis.Redis.from_url(redis_url)
    client = BitrixClient(WebhookUrl.parse(webhook), connect_timeout_s=5, read_timeout_s=30,
                          max_connections=8, transport=marking_transport(8))
    limiter = Limiter(redis, f"{{{prefix}}}:limiter", rate_per_s=1e9, burst=10**6)
    pauses = MethodPauses(redis, f"{prefix}:pauses", budget_s=480, safety=0.9)
    policy = RetryPolicy(budgets={}, not_found_create_budget=0, backoff_base_s=1, backoff_max_s=1,
                         rate_limit_base_s=1)
    sender = Sender(client, limiter=limiter, pauses=pauses, events=WorkerEvents(), policy=policy,
                    rng=random.Random(1))
    made = await client.batch({f"c{i}": crm_add("deal", {"TITLE": f"d{i}"}) for i in range(N)})
    ids = [int(made.results[f"c{i}"]) for i in range(N)]
    async def mark():
        pass
    async def one(v):
        with before_first_request(mark):
            commands = {f"c{i}": crm_update("deal", ids[i], {"STAGE_ID": "WON", "COMMENTS": f"v{v}-{i}"})
                        for i in range(N)}
            paused_for = getattr(sender, "paused_for", pauses.paused_for)  # with the slot, where it exists
            if await paused_for(sorted({c.method for c in commands.values()})):
                raise RuntimeError("paused")
            answer = await sender.send(commands)
            assert isinstance(answer, Answered) and len(answer.results) == N, answer
            pauses.take_unwritten()
    try:
        for v in range(5):
            await one(v)
        best_s = float("inf")
        for r in range(rounds):
            t0 = time.process_time()
            for v in range(number):
                await one(v)
            best_s = min(best_s, time.process_time() - t0)
        return best_s / number / N * 1e6
    finally:
        await client.aclose()
        await redis.delete(f"{{{prefix}}}:limiter", f"{prefix}:pauses")
        await redis.aclose()

if os.environ.get("BENCH_MICRO_WEBHOOK"):
    out["send"] = asyncio.run(send_path(os.environ["BENCH_MICRO_WEBHOOK"], os.environ["BENCH_MICRO_REDIS"]))
print(json.dumps(out))
"""
LABELS = {
    "build_units": "reading a payload into a unit (`intake.build_units`)",
    "settlement": "building the settlement (`outcomes.settlement`)",
    "lua_json": "the settle script's argument (`redis.streams.lua_json`)",
    "report": "the `applied` log line and metrics (`reporting.report`)",
    "store_sqlite": "mapping store read + write, SQLite (worker CPU, all threads)",
    "store_postgresql": "mapping store read + write, PostgreSQL (worker CPU, not the server's)",
    "claim_to_units": "claim reply -> entries -> units (`streams._entry`, `intake.build_units`)",
    "results_to_settle": "answer -> result -> mapping row + settle argument (`write_result`, `outcomes`)",
    "plan_screen": "planning, field screening and the command (`plan_unit`, `Screening.screen`)",
    "report_settled": "a batch's lines and metrics, as the worker reports them (`report_settled`)",
    "send": "one request of the updates to the emulator: pauses, limiter, HTTP, answer (`Sender.send`)",
}


def send_env(emulator: Emulator) -> dict[str, str]:
    """What the probe needs for the ``send`` path: the emulator's webhook and the benchmark Redis."""
    return {"BENCH_MICRO_WEBHOOK": emulator.webhook_url, "BENCH_MICRO_REDIS": redis_url()}


def probe(src: Path, postgres: str | None, env: dict[str, str] | None = None) -> dict[str, float]:
    args = [sys.executable, "-c", _PROBE, str(src), str(BATCH), *([postgres] if postgres else [])]
    done = subprocess.run(
        args, capture_output=True, text=True, check=True, env={**os.environ, **(env or {}), "PYTHONPATH": ""}
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost_micro", description=__doc__.splitlines()[0])
    parser.add_argument("--previous", default=cost.PREVIOUS_COMMIT, help="the earlier commit (%(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating runs of each version (%(default)s)"
    )
    parser.add_argument("--postgres", action="store_true", help="the store on PostgreSQL as well")
    parser.add_argument("--send", action="store_true", help="one request to an emulator as well")
    args = parser.parse_args(argv)
    postgres = cost.postgres_admin_url() if args.postgres else None
    with tempfile.TemporaryDirectory(prefix="bitrix-cost-micro-") as tmp:
        versions = {
            args.previous: cost.extract_previous(Path(tmp), args.previous),
            "current": cost.ROOT / "src",
        }
        emulator = asyncio.run(Emulator.start(Path(tmp), no_limits=True)) if args.send else None
        env = send_env(emulator) if emulator else {}
        best: dict[str, dict[str, float]] = {v: {} for v in versions}
        try:
            for _ in range(args.rounds):
                for name, src in versions.items():
                    for key, value in probe(src, postgres, env).items():
                        best[name][key] = min(value, best[name].get(key, value))
        finally:
            if emulator is not None:
                emulator.stop()
    rows = [
        f"| path, µs CPU per operation (batches of {BATCH}) | {args.previous} | current |",
        "|---|---|---|",
    ]
    before, now = best[args.previous], best["current"]
    rows += [
        f"| {label} | {before[key]:.1f} | {now[key]:.1f} |" for key, label in LABELS.items() if key in now
    ]
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
