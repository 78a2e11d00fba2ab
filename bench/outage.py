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
import itertools
import json
import math
import signal
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
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
    _time_at,
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
from .tcpproxy import RefusingProxy
from .throughput import BURST_OPS, PORTAL_LIMIT_OPS_PER_S, prepare_portal

KINDS = ("html503", "refused", "auth")
IN_FLIGHT_GRACE_S = 1.0
BUCKET_FULL = 45  # of the portal's 50: the worker allows itself 98% of the burst (rate_safety)
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


def gate_events(logs: list[Path], wall0: float) -> list[tuple[float, str]]:
    """(seconds since the start, pause|probe_failed|reopened) from the workers' JSON logs, in time order."""
    names = {
        "portal paused: ": "pause",
        "portal probe failed": "probe_failed",
        "portal probe succeeded": "reopened",
    }
    out: list[tuple[float, str]] = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            event = str(rec.get("event", ""))
            for prefix, name in names.items():
                if event.startswith(prefix) and "timestamp" in rec:
                    at = datetime.fromisoformat(str(rec["timestamp"]).replace("Z", "+00:00")).timestamp()
                    out.append((round(at - wall0, 3), name))
    return sorted(out)


def per_interval(times: list[float], marks: list[float]) -> list[int]:
    """Requests that reached the portal in each interval [marks[k], marks[k+1])."""
    return [sum(1 for t in times if a <= t < b) for a, b in itertools.pairwise(marks)]


def drain(
    samples: list[tuple[float, int, int, int]], reopen_s: float, base: int, total: int
) -> dict[str, Any]:
    """The drain after the reopen: the fresh burst, then the steady rate, then the time to empty.

    The steady window starts once the worker is held by the portal's limit rather than by its own speed:
    when it has sent the bucket's fresh burst on top of the drain (requests since the reopen minus 2 per
    second reach ``BUCKET_FULL``), and not before ``BURST_OPS`` + 250 updates were applied; it ends 150
    updates before the backlog is empty (the tail of partial batches).
    """
    at_reopen = max((a for t, a, _, _ in samples if t <= reopen_s), default=base) - base
    backlog = total - at_reopen
    rel = [(t - reopen_s, a - base - at_reopen, r, q) for t, a, r, q in samples if t >= reopen_s]
    out: dict[str, Any] = {"backlog_at_reopen": backlog}
    if not rel or backlog <= 0:
        return out
    out["time_to_empty_s"] = round(_time_at(rel, backlog), 2)
    out["ideal_time_to_empty_s"] = round(max(0, backlog - BURST_OPS) / PORTAL_LIMIT_OPS_PER_S, 2)
    r0, head, end_n = rel[0][2], BURST_OPS + 250, backlog - 150
    held = [(t, a) for t, a, r, _ in rel if (r - r0) - 2.0 * t >= BUCKET_FULL and a >= head]
    if not held or end_n - held[0][1] < 200:
        out["steady_note"] = "the backlog emptied before the portal's limit held the worker back"
        return out
    t_start, n_start = held[0]
    t_end = _time_at(rel, end_n)
    rate = (end_n - n_start) / (t_end - t_start) if t_end > t_start else math.nan
    refused = [q for t, _, _, q in rel if t_start <= t <= t_end]
    out.update(
        {
            "burst_s": round(t_start, 2),
            "burst_ops": n_start,
            "steady_window_ops": end_n - n_start,
            "steady_window_s": round(t_end - t_start, 2),
            "steady_ops_per_s": round(rate, 2),
            "steady_pct_of_limit": round(100 * rate / PORTAL_LIMIT_OPS_PER_S, 1),
            "steady_refusals": (refused[-1] - refused[0]) if len(refused) >= 2 else 0,
        }
    )
    return out


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


def during_outage(
    request_times: list[float],
    events: list[tuple[float, str]],
    *,
    at_begin: dict[str, Any],
    at_end: dict[str, Any],
    begin_s: float,
    end_s: float,
) -> dict[str, Any]:
    """What the portal received while it was down, and the gate's rhythm (pause, probes, reopen)."""
    pauses = [t for t, e in events if e == "pause" and t >= begin_s - 1]
    probes = [t for t, e in events if e in ("probe_failed", "reopened") and t >= begin_s - 1]
    reopened = [t for t, e in events if e == "reopened" and t >= begin_s - 1]
    paused_at = pauses[0] if pauses else None
    # Requests that were already past the gate when the pause was recorded (sent by the worker's other
    # senders in the same instant) are the pause's cost, not the probes': the first interval starts
    # IN_FLIGHT_GRACE_S after the pause, and what arrived in that grace is reported on its own.
    settled = None if paused_at is None else paused_at + IN_FLIGHT_GRACE_S
    marks = ([settled] if settled is not None else []) + [t for t in probes if t <= end_s] + [end_s]
    intervals = per_interval(request_times, marks)
    gate_rhythm = ([paused_at] if paused_at is not None else []) + [t for t in probes if t <= end_s]
    in_grace = [] if paused_at is None else [t for t in request_times if paused_at <= t < settled]
    fields_calls = at_end["calls"].get("crm.deal.fields", {})
    fields_before = at_begin["calls"].get("crm.deal.fields", {})
    return {
        "requests_received_during_outage": at_end["requests"] - at_begin["requests"],
        "request_times_during_outage_s": [round(t, 2) for t in request_times if begin_s <= t <= end_s],
        "probes_received_during_outage": sum(fields_calls.values()) - sum(fields_before.values()),
        "paused_at_s": paused_at,
        "paused_after_outage_began_s": None if paused_at is None else round(paused_at - begin_s, 2),
        "probe_times_s": probes,
        "probe_intervals_s": [round(b - a, 1) for a, b in itertools.pairwise(gate_rhythm)],
        "requests_per_probe_interval": intervals,
        "max_requests_in_a_probe_interval": max(intervals, default=0),
        "requests_in_flight_after_pause": len(in_grace),
        "requests_before_pause": sum(1 for t in request_times if begin_s <= t < (paused_at or end_s)),
        "reopened_at_s": reopened[0] if reopened else None,
        "reopened_after_outage_ended_s": round(reopened[0] - end_s, 2) if reopened else None,
    }


def targets(r: dict[str, Any]) -> dict[str, bool | None]:
    pct = r["drain"].get("steady_pct_of_limit")
    return {
        "no_dead_letters": r["accounting"]["dead_lettered"] == 0,
        "at_most_one_request_per_probe_interval": r["max_requests_in_a_probe_interval"] <= 1,
        "steady_drain_at_least_97pct": None if pct is None else pct >= 97.0,
        "every_operation_applied_once": r["accounting"]["every_operation_applied_once"],
    }


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
    return ap.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    a = _args(argv)
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
    path.write_text(json.dumps({"argv": argv, "results": results}, indent=2))
    print(json.dumps(summary(results), indent=2))
    print(f"written {path}; worker and emulator logs in {workdir}")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        ours, naive = r["ours"], r["naive"]
        if "error" in ours or (naive is not None and "error" in naive):
            rows.append(
                {
                    "scenario": r["plan"]["kind"],
                    "ours": ours.get("error"),
                    "naive": (naive or {}).get("error"),
                }
            )
            continue
        rows.append(
            {
                "scenario": ours["scenario"],
                "outage_s": r["plan"]["outage_s"],
                "dead_lettered": ours["accounting"]["dead_lettered"],
                "requests_during_outage": ours["requests_received_during_outage"],
                "probe_intervals_s": ours["probe_intervals_s"],
                "max_requests_per_probe_interval": ours["max_requests_in_a_probe_interval"],
                "reopened_after_outage_s": ours["reopened_after_outage_ended_s"],
                "drain": ours["drain"],
                "applied_once": ours["accounting"]["every_operation_applied_once"],
                "targets": ours["targets"],
                "naive_given_up": None if naive is None else naive["given_up"],
                "naive_given_up_during_outage": None if naive is None else naive["given_up_during_outage"],
                "naive_requests_during_outage": None if naive is None else naive["during"]["requests"],
            }
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(cli())
