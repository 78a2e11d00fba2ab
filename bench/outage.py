"""Benchmark 5: a long portal-wide outage while operations keep arriving, for our worker and the naive one.

Three kinds of outage, each ``outage_s`` long (600 s by default; ``--quick`` 60 s):

* ``html503``: every HTTP request is answered with nginx's HTML "503 Service Temporarily Unavailable";
* ``refused``: the portal's address refuses connections (a TCP proxy in front of the emulator stops
  listening, bench/tcpproxy.py);
* ``auth``: every REST call answers ``INVALID_CREDENTIALS`` (a webhook revoked, then restored).

Workload: updates, each on its own deal (created before the clock starts at no limits, mapping store
seeded): ``backlog`` (10,000) wait in the stream when the worker starts, and ``arriving`` (5,000) more
arrive at an even rate until the outage ends; the outage meets the worker draining the backlog, and the
backlog at the reopen is large enough for the drain to reach the portal's limit after its fresh burst. The
outage starts ``lead_s`` after the worker's first applied update. The portal runs at its default limits
(burst 50, 2 requests/s = 100 updates/s in batches of 50) with an empty bucket at the start; the worker is
``python -m bitrix_worker run`` as a subprocess with its default settings (``--set name=value`` changes
one). Every count is taken at the emulator (the portal's side); the gate's pause, probe and reopen times
come from the worker's JSON log.

Per scenario: operations dead-lettered; requests the portal received during the outage, and the most in any
probe interval after the pause (the target: at most 1); the probe intervals; how long after the outage the
portal reopened; the drain after it (the steady rate after the fresh burst, as % of the portal's 100
updates/s, and the time to empty the backlog); and exactly-once accounting (every update applied once at the
portal, one outcome per operation, every deal in its final state).

The naive seed worker (bench/naive.py: one call per operation, every error retried 5 times at once) runs the
same scenario at the same time against its own emulator, proxy and stream, so the two are side by side.

    python -m bench.outage                       # the three 600 s scenarios, ~20 min (they run staggered)
    python -m bench.outage --quick               # 60 s outages
    python -m bench.outage --only refused --outage-s 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .common import (
    RESULTS_DIR,
    SECRET,
    Admin,
    Emulator,
    Namespace,
    Sampler,
    enqueue_payloads,
    ensure_dir,
    key_of,
    ok_calls,
    redis_url,
    spawn_worker,
    stop_all,
    update_payload,
    worker_env,
)
from .naive import run_naive
from .outage_figures import (
    drain,
    during_outage,
    gate_events,
    markdown,
    refresh,
    summary,
    targets,
)
from .tcpproxy import RefusingProxy
from .throughput import prepare_portal

KINDS = ("html503", "refused", "auth")
FIELDS = {"STAGE_ID": "WON"}


@dataclass(frozen=True)
class Plan:
    kind: str
    outage_s: float = 600.0
    lead_s: float = 5.0  # normal traffic before the outage starts
    arriving: int = 5_000  # arrive at an even rate from the worker's start to the outage's end
    backlog: int = 10_000  # waiting in the stream when the worker starts
    processes: int = 1
    drain_cap_s: float = 900.0  # after the outage: up to one probe interval (600 s at most) plus the drain
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.backlog + self.arriving

    @property
    def arrival_s(self) -> float:
        return self.lead_s + self.outage_s


class Outage:
    """Switches one kind of outage on and off (the emulator's admin API, or the proxy)."""

    def __init__(self, kind: str, admin: Admin, proxy: RefusingProxy) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown outage kind {kind!r}; one of {', '.join(KINDS)}")
        self.kind, self.admin, self.proxy = kind, admin, proxy

    async def begin(self) -> None:
        if self.kind == "html503":
            await self.admin.faults(rules=[{"method": "*", "scope": "request", "kind": "503"}])
        elif self.kind == "auth":
            await self.admin.faults(auth_outage={"start_s": 0})
        else:
            await self.proxy.refuse()

    async def end(self) -> None:
        if self.kind == "html503":
            await self.admin.faults(rules=[])
        elif self.kind == "auth":
            await self.admin.faults(auth_outage=None)
        else:
            await self.proxy.accept()


@dataclass
class Side:
    """One portal (emulator + proxy in front), its Redis namespace and mapping store."""

    emu: Emulator
    proxy: RefusingProxy
    admin: Admin
    client: aioredis.Redis
    ns: Namespace
    database_url: str

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}/rest/1/{SECRET}/"

    @classmethod
    async def start(cls, workdir: Path, *, seed: int) -> Side:
        ensure_dir(workdir)
        emu = await Emulator.start(workdir, seed=seed)
        proxy = RefusingProxy(emu.port)
        await proxy.accept()
        # generous timeouts: on a loaded machine a 5,000-entry XRANGE can take a while to come back
        client = aioredis.Redis.from_url(
            redis_url(), socket_timeout=120, socket_connect_timeout=10, retry_on_timeout=True
        )
        ns = Namespace(client)
        db = f"sqlite+aiosqlite:///{workdir / ('outage-' + ns.prefix.replace(':', '-') + '.sqlite3')}"
        return cls(emu, proxy, Admin(emu.base_url), client, ns, db)

    async def close(self) -> None:
        await self.proxy.aclose()
        await self.ns.cleanup()
        await self.client.aclose()
        await self.admin.aclose()
        self.emu.stop()


async def _sleep_until(t0: float, at_s: float) -> None:
    await asyncio.sleep(max(0.0, t0 + at_s - time.monotonic()))


async def produce(client: aioredis.Redis, stream: str, plan: Plan, t0: float) -> None:
    """The operations after the backlog, at an even rate until the outage ends."""
    sent, rest = plan.backlog, plan.arriving
    while sent < plan.total:
        share = min(1.0, (time.monotonic() - t0) / plan.arrival_s) if plan.arrival_s > 0 else 1.0
        due = plan.backlog + math.ceil(rest * share)
        if due > sent:
            await enqueue_payloads(
                client, stream, (update_payload(key_of(i), FIELDS) for i in range(sent, due))
            )
            sent = due
        await asyncio.sleep(0.25)


async def first_applied(admin: Admin, before: dict[str, Any], procs: list[Any], cap_s: float = 120) -> float:
    """time.monotonic() when the portal applied the worker's first update (a loaded machine takes seconds to
    start a Python process; the outage should meet a working worker, not one still importing)."""
    deadline = time.monotonic() + cap_s
    base = ok_calls(before, "crm.deal.update")
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if ok_calls(await admin.stats(), "crm.deal.update") > base:
            break
        await asyncio.sleep(0.05)
    return time.monotonic()


async def wait_finished(ns: Namespace, n: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        counters = await ns.counters()
        if sum(v for k, v in counters.items() if k.startswith("outcome:")) >= n:
            return True
        await asyncio.sleep(0.5)
    return False


async def accounting(side: Side, n: int, applied_at_portal: int) -> dict[str, Any]:
    """Each operation once: one outcome per key, every update applied once at the portal, deals final."""
    outcomes = await side.ns.outcomes()
    per_key: dict[str, list[str]] = {}
    for o in outcomes:
        per_key.setdefault(o["ident"].removeprefix("deal:"), []).append(o["outcome"])
    wrong = [k for k in (key_of(i) for i in range(n)) if per_key.get(k) != ["applied"]]
    deals = await side.admin.entities("deal")
    not_final = sum(1 for d in deals if d.get("STAGE_ID") != FIELDS["STAGE_ID"])
    dead = await side.ns.dead_letters()
    counters = await side.ns.counters()
    return {
        "outcomes": {k: v for k, v in counters.items() if k.startswith("outcome:")},
        "dead_lettered": len(dead),
        "applied_at_portal": applied_at_portal,
        "applied_more_than_once": max(0, applied_at_portal - n),
        "deals_not_in_final_state": not_final,
        "every_operation_applied_once": not wrong and applied_at_portal == n and not_final == 0,
        "mismatches": wrong[:10],
    }


async def run_ours(plan: Plan, workdir: Path, *, seed: int = 5) -> dict[str, Any]:
    side = await Side.start(workdir, seed=seed)
    outage = Outage(plan.kind, side.admin, side.proxy)
    procs = []
    try:
        await prepare_portal(side.emu, side.admin, plan.total, side.database_url)
        backlog = (update_payload(key_of(i), FIELDS) for i in range(plan.backlog))
        await enqueue_payloads(side.client, side.ns.stream, backlog)
        before = await side.admin.stats()
        sampler = Sampler(side.admin)
        sampler.start()
        logs = []
        for i in range(plan.processes):
            env = worker_env(
                webhook_url=side.webhook_url,
                ns=side.ns,
                database_url=side.database_url,
                consumer=f"w{i}",
                **plan.settings,
            )
            name = f"outage-{plan.kind}-{side.ns.prefix.replace(':', '-')}-w{i}"
            procs.append(spawn_worker(workdir, env, name, until_idle=False))
            logs.append(workdir / f"{name}.log")
        # the scenario's clock starts when the worker works (a loaded machine takes seconds to start Python)
        t0 = await first_applied(side.admin, before, procs)
        wall0 = time.time()
        producer = asyncio.create_task(produce(side.client, side.ns.stream, plan, t0))
        await _sleep_until(t0, plan.lead_s)
        at_begin = await side.admin.stats()
        await outage.begin()
        begin_s = time.monotonic() - t0
        await _sleep_until(t0, plan.arrival_s)
        at_end = await side.admin.stats()
        await outage.end()
        end_s = time.monotonic() - t0
        await producer
        finished = await wait_finished(side.ns, plan.total, t0 + plan.arrival_s + plan.drain_cap_s)
        stop_all(procs)
        await sampler.stop()
        after = await side.admin.stats()
        base = ok_calls(before, "crm.deal.update")
        applied = ok_calls(after, "crm.deal.update") - base
        result = {
            "client": "bitrix-worker",
            "scenario": plan.kind,
            "operations": plan.total,
            "backlog_at_start": plan.backlog,
            "arriving": plan.arriving,
            "outage": {"start_s": round(begin_s, 2), "end_s": round(end_s, 2)},
            "finished": finished,
            "exit_codes": [p.poll() for p in procs],
            "settings": plan.settings,
            **during_outage(
                [t - t0 for t in side.proxy.request_times],
                gate_events(logs, wall0),
                at_begin=at_begin,
                at_end=at_end,
                begin_s=begin_s,
                end_s=end_s,
            ),
            "accounting": await accounting(side, plan.total, applied),
        }
        reopen = result["reopened_at_s"] if result["reopened_at_s"] is not None else end_s
        samples = [(t + sampler.t0 - t0, a, r, q) for t, a, r, q in sampler.samples]  # scenario's clock
        result["drain"] = drain(samples, reopen, base, plan.total)
        result["samples"] = [(round(t, 2), a - base, r, q) for t, a, r, q in samples]  # to recompute
        result["targets"] = targets(result)
        return result
    finally:
        stop_all(procs)
        await side.close()


async def run_naive_side(
    plan: Plan, workdir: Path, *, seed: int = 6, after_cap_s: float = 300
) -> dict[str, Any]:
    """The naive worker through the same scenario, in three windows: before, during and after the outage."""
    side = await Side.start(workdir, seed=seed)
    outage = Outage(plan.kind, side.admin, side.proxy)
    try:
        ids = await prepare_portal(side.emu, side.admin, plan.total, side.database_url)
        backlog = (update_payload(key_of(i), FIELDS) for i in range(plan.backlog))
        await enqueue_payloads(side.client, side.ns.stream, backlog)
        t0 = time.monotonic()
        producer = asyncio.create_task(produce(side.client, side.ns.stream, plan, t0))
        kw: dict[str, Any] = {
            "webhook_url": side.webhook_url,
            "redis_url": redis_url(),
            "stream": side.ns.stream,
            "ids": ids,
            "count": 1,
        }
        stats = [await side.admin.stats()]
        lead = await run_naive(**kw, window_s=t0 + plan.lead_s - time.monotonic(), stop_when_empty=False)
        stats.append(await side.admin.stats())
        await outage.begin()
        down = await run_naive(**kw, window_s=t0 + plan.arrival_s - time.monotonic(), stop_when_empty=False)
        stats.append(await side.admin.stats())
        await outage.end()
        await producer
        rest = await run_naive(**kw, window_s=after_cap_s)
        stats.append(await side.admin.stats())
        phases = {"before": lead, "during": down, "after": rest}
        out: dict[str, Any] = {"client": "naive (1 call/op, 5 immediate retries)", "scenario": plan.kind}
        for k, (name, res) in enumerate(phases.items()):
            out[name] = {
                **res.as_dict(),
                "requests_received_by_portal": stats[k + 1]["requests"] - stats[k]["requests"],
            }
        out["given_up"] = sum(r.given_up for r in phases.values())
        out["given_up_during_outage"] = down.given_up
        out["applied"] = sum(r.applied for r in phases.values())
        out["not_reached"] = plan.total - sum(r.operations for r in phases.values())
        return out
    finally:
        await side.close()


async def run_scenario(
    plan: Plan, workdir: Path, *, naive: bool = True, naive_after_cap_s: float = 300
) -> dict[str, Any]:
    jobs = [run_ours(plan, workdir / f"{plan.kind}-ours")]
    if naive:
        jobs.append(run_naive_side(plan, workdir / f"{plan.kind}-naive", after_cap_s=naive_after_cap_s))
    results = [
        {"scenario": plan.kind, "error": repr(r)} if isinstance(r, BaseException) else r
        for r in await asyncio.gather(*jobs, return_exceptions=True)
    ]  # one side failing (a Redis hiccup on a loaded machine) must not lose the other's figures
    return {"plan": plan.__dict__, "ours": results[0], "naive": results[1] if naive else None}


async def main(
    plans: list[Plan],
    workdir: Path,
    *,
    stagger_s: float,
    naive: bool = True,
    naive_after_cap_s: float = 300,
) -> list[dict[str, Any]]:
    """The scenarios at the same time, each started ``stagger_s`` after the previous (so the drains, the
    only busy part, do not overlap on a small machine)."""

    async def later(k: int, plan: Plan) -> dict[str, Any]:
        await asyncio.sleep(k * stagger_s)
        return await run_scenario(plan, workdir, naive=naive, naive_after_cap_s=naive_after_cap_s)

    return list(await asyncio.gather(*(later(k, p) for k, p in enumerate(plans))))


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 s outages")
    ap.add_argument("--outage-s", type=float, default=None)
    ap.add_argument("--only", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    ap.add_argument("--arriving", type=int, default=5_000, help="operations arriving during the run")
    ap.add_argument("--backlog", type=int, default=10_000, help="operations waiting when the worker starts")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--stagger-s", type=float, default=None, help="delay between scenario starts")
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a worker setting")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--render", type=Path, default=None, help="print a saved result file as the docs table")
    return ap.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.render is not None:
        print(markdown(refresh(json.loads(a.render.read_text())["results"])), end="")
        return 0
    outage_s = a.outage_s if a.outage_s is not None else (60.0 if a.quick else 600.0)
    settings = dict(s.split("=", 1) for s in a.set)
    base = Plan(
        kind=KINDS[0],
        outage_s=outage_s,
        arriving=a.arriving,
        backlog=a.backlog,
        processes=a.processes,
        settings=settings,
    )
    plans = [replace(base, kind=k.strip()) for k in a.only.split(",") if k.strip()]
    stagger = a.stagger_s if a.stagger_s is not None else (90.0 if outage_s >= 300 else 30.0)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="bench-outage-"))  # worker logs stay for a look
    signal.signal(signal.SIGTERM, _interrupt)  # a kill still runs the clean-up (emulators, workers, keys)
    results = asyncio.run(main(plans, workdir, stagger_s=stagger, naive=not a.no_naive))
    ensure_dir(RESULTS_DIR)
    path = RESULTS_DIR / f"outage-{'quick' if a.quick else 'full'}-{stamp}.json"
    # compact: the 0.25 s samples of a 10-minute run are most of it
    path.write_text(json.dumps({"argv": argv, "results": results}, separators=(",", ":")))
    print(json.dumps(summary(results), indent=2))
    print(f"written {path}; worker and emulator logs in {workdir}")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(cli())
