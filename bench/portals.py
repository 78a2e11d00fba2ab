"""Many portals: fairness and isolation of multi-portal workers (``BITRIX_WORKER_PORTALS=all``).

N emulated portals at standard limits (bucket 50, drain 2 requests/s) in one emulator process
(``MultiPortalServer``, one loopback address each), a portal registry (SQLite) listing them, and two worker
processes ``bitrix-worker run --portals all`` dividing them. Scenarios, each on fresh streams:

* ``trickle``: every portal but one gets one create every 2 s; nothing else (the baseline);
* ``hot``: the same, plus ``--hot-ops`` creates queued for the remaining portal before the start;
* ``hot-shared``: ``hot`` with load-aware placement off (``BITRIX_WORKER_PORTAL_BUSY_AFTER_S`` huge), as
  before it existed: the hot portal shares a process with about half the trickle portals;
* ``backlog``: ``--backlog-portals`` portals with a backlog each, nothing else;
* ``nineteen``: the same less the first portal (the others alone: the baseline of ``broken``);
* ``broken``: ``backlog`` with the first portal's webhook secret wrong (every call refused: auth).

Measured from the outcomes streams (each outcome's Redis id is when it was settled, its ``stream_id`` when
it was added): the applied rate per portal over the window (after a warm-up that spends the initial burst),
also over each third of the window (a rate still falling is a window that caught the initial burst), and
the trickle portals' p50/p99 from XADD to applied. CPU: user+system seconds of each worker process over the
window (``/proc``), as a share of one core. The machine's load average is printed beside it: the bench host
is shared, so the figures are a floor.

    python -m bench.portals --portals 100 --scenarios trickle,hot,hot-shared
    python -m bench.portals --backlog-portals 20 --scenarios backlog,nineteen,broken --warmup-s 90
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.common import CLI, RESULTS_DIR, Namespace, ensure_dir, redis_url, stop_all
from bitrix_worker.portal_layout import portal_stream
from bitrix_worker.portals.model import PLANS, PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key
from bitrix_worker.redis.producing import note_portal

STANDARD = PLANS["standard"]
LIMIT_OPS_S = STANDARD.rate_per_s * 50  # a full batch per request: the most a standard portal can take
TRICKLE_EVERY_S = 2.0


def host(i: int) -> str:
    return f"127.0.0.{i + 2}"


def pid(i: int) -> str:
    return f"p{i:03d}"


def webhook_portal(portal: str, url: str) -> PortalRecord:
    return PortalRecord(portal, "webhook", url.split("/rest/", maxsplit=1)[0] + "/rest/", webhook_url=url)


def serve(n: int, port: int) -> None:
    """The emulator process: n portals at standard limits until killed."""
    from bitrix_worker.emulator import EmulatorConfig
    from bitrix_worker.emulator.multi import MultiPortalServer

    server = MultiPortalServer({host(i): EmulatorConfig(seed=i) for i in range(n)}, port=port)
    server.start()
    print(f"ready {server.port}", flush=True)
    while True:
        time.sleep(3600)


THIRDS = 3
NO_PLACEMENT = {"BITRIX_WORKER_PORTAL_BUSY_AFTER_S": "1000000000"}


@dataclass
class Run:
    name: str
    rates: dict[str, float]  # portal -> applied ops/s over the window
    thirds: dict[str, list[float]]  # portal -> applied ops/s over each third of the window
    latencies_ms: list[int]  # trickle: XADD -> applied
    cpu_each: list[float]  # each worker process's share of one core
    load: float
    window_s: float
    redis_ops_s: float  # every client's commands: a figure of this bench only on a Redis of its own
    memory: dict[str, Any]

    @property
    def cpu_core_share(self) -> float:
        return sum(self.cpu_each)

    def summary(self, hot: str | None, backlog: list[str]) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        out: dict[str, Any] = {"scenario": self.name, "window_s": self.window_s}
        if lat:
            out["trickle_ops"] = len(lat)
            out["trickle_p50_ms"] = lat[len(lat) // 2]
            out["trickle_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        if hot is not None:
            out["hot_ops_s"] = round(self.rates.get(hot, 0.0), 1)
            out["hot_share_of_limit"] = round(self.rates.get(hot, 0.0) / LIMIT_OPS_S, 3)
        if backlog:
            shares = [self.rates.get(p, 0.0) / LIMIT_OPS_S for p in backlog]
            out["backlog_portals"] = len(backlog)
            out["backlog_min_share"] = round(min(shares), 3)
            out["backlog_mean_share"] = round(statistics.mean(shares), 4)
            out["backlog_stdev_share"] = round(statistics.pstdev(shares), 4)
            thirds = [
                statistics.mean(self.thirds[p][k] for p in backlog) / LIMIT_OPS_S for k in range(THIRDS)
            ]
            out["backlog_mean_share_by_third"] = [round(t, 4) for t in thirds]
        out["worker_cpu_cores"] = round(self.cpu_core_share, 2)
        out["worker_cpu_cores_each"] = [round(c, 2) for c in self.cpu_each]
        out["loadavg_1m"] = round(self.load, 2)
        out["redis_commands_s"] = round(self.redis_ops_s)
        applied = sum(self.rates.values())
        out["applied_ops_s"] = round(applied, 1)
        out |= self.memory
        return out


def cpu_s(pids: list[int]) -> list[float]:
    each = []
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        each.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return each


async def fill(r: aioredis.Redis, base: str, portal: str, n: int, *, tag: str) -> None:
    stream = portal_stream(base, portal, None)
    await note_portal(r, f"{{{base}}}:portals", portal)
    for start in range(0, n, 2000):
        async with r.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 2000)):
                op = {"op": "create", "entity": "deal", "key": f"{tag}-{portal}-{i}", "portal": portal}
                pipe.xadd(stream, {"payload": json.dumps(op)})
            await pipe.execute()


async def trickle(r: aioredis.Redis, base: str, portals: list[str], tag: str, stop_at: float) -> None:
    """One create per portal every 2 s, spread evenly over the 2 s."""
    for p in portals:
        await note_portal(r, f"{{{base}}}:portals", p)
    step = TRICKLE_EVERY_S / max(1, len(portals))
    n = 0
    t0 = time.monotonic()
    while time.monotonic() < stop_at:
        p = portals[n % len(portals)]
        op = {"op": "create", "entity": "deal", "key": f"{tag}-{p}-t{n}", "portal": p}
        await r.xadd(portal_stream(base, p, None), {"payload": json.dumps(op)})
        n += 1
        await asyncio.sleep(max(0.0, t0 + n * step - time.monotonic()))


async def outcomes(r: aioredis.Redis, stream: str) -> list[tuple[int, int]]:
    """(settled ms, added ms) of every applied outcome of one portal's stream."""
    rows: list[tuple[int, int]] = []
    start = "-"
    while True:
        chunk = await r.xrange(f"{{{stream}}}:outcomes", min=start, count=5000)
        if not chunk:
            return rows
        for rid, f in chunk:
            if f.get(b"outcome") == b"applied":
                rows.append((int(rid.split(b"-")[0]), int(f[b"stream_id"].split(b"-")[0])))
        ms, seq = chunk[-1][0].decode().split("-")
        start = f"{ms}-{int(seq) + 1}"


async def key_bytes(r: aioredis.Redis, base: str, portals: list[str]) -> dict[str, int]:
    """Redis memory of the last portal's keys (MEMORY USAGE, sampled), and of one outcome record."""
    stream = portal_stream(base, portals[-1], None)
    total = 0
    for pattern in (stream, f"{{{stream}}}:*"):
        async for key in r.scan_iter(match=pattern, count=1000):
            total += int(await r.memory_usage(key, samples=0) or 0)
    out = {"last_portal_redis_bytes": total}
    first = portal_stream(base, portals[0], None)
    n = int(await r.xlen(f"{{{first}}}:outcomes"))
    if n >= 1000:
        used = int(await r.memory_usage(f"{{{first}}}:outcomes", samples=0) or 0)
        out["outcome_record_bytes"] = used // n
    return out


def served(log: Path) -> set[str]:
    """The portals a worker process serves now, from its log: loops started less those moved away."""
    found: set[str] = set()
    for line in log.read_text(errors="replace").splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("event") == "worker started" and record.get("portal"):
            found.add(record["portal"])
        elif str(record.get("event", "")).startswith("portal moves"):
            found.discard(record.get("portal", ""))
    return found


async def now_ms(r: aioredis.Redis) -> int:
    sec, us = await r.time()
    return int(sec) * 1000 + int(us) // 1000


async def scenario(
    name: str,
    *,
    workdir: Path,
    env: dict[str, str],
    serve_ids: list[str],
    backlog: dict[str, int],
    trickle_ids: list[str],
    warmup_s: float,
    window_s: float,
    extra_env: dict[str, str],
    processes: int = 2,
) -> Run:
    r = aioredis.Redis.from_url(redis_url())
    ns = Namespace(r)
    tag = ns.prefix.split(":")[1]
    try:
        for p, n in backlog.items():
            await fill(r, ns.stream, p, n, tag=tag)
        wenv = (
            env
            | {
                "BITRIX_WORKER_STREAM": ns.stream,
                "BITRIX_WORKER_DEAD_STREAM": ns.dead,
                "BITRIX_WORKER_GROUP": ns.group,
                "BITRIX_WORKER_PORTALS": ",".join(serve_ids),
            }
            | extra_env
        )
        procs = [
            subprocess.Popen(  # noqa: ASYNC220 - started once per scenario
                [sys.executable, *CLI, "run"],
                env=wenv | {"BITRIX_WORKER_CONSUMER": f"{name}-w{k}"},
                stdout=(workdir / f"{name}-w{k}.log").open("wb"),
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
            for k in range(processes)
        ]
        started = time.monotonic()
        producer = asyncio.create_task(
            trickle(r, ns.stream, trickle_ids, tag, started + warmup_s + window_s)
            if trickle_ids
            else asyncio.sleep(0)
        )
        await asyncio.sleep(warmup_s)
        t0_ms = await now_ms(r)
        cpu0 = cpu_s([p.pid for p in procs])
        cmds0 = int((await r.info("stats"))["total_commands_processed"])
        stats0 = await r.info("commandstats")
        await asyncio.sleep(window_s)
        t1_ms = await now_ms(r)
        cpu1 = cpu_s([p.pid for p in procs])
        cmds1 = int((await r.info("stats"))["total_commands_processed"])
        stats1 = await r.info("commandstats")
        load = os.getloadavg()[0]
        await producer
        memory: dict[str, Any] = await key_bytes(r, ns.stream, serve_ids)
        memory["busy_at_end"] = sorted(
            [
                m.decode()
                async for k in r.scan_iter(match=f"{{{ns.stream}}}:fleet*:busy")
                for m in await r.zrange(k, 0, -1)
            ]
        )
        calls = {k: stats1[k]["calls"] - stats0.get(k, {}).get("calls", 0) for k in stats1}
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
        memory["top_commands_s"] = {k.removeprefix("cmdstat_"): round(v / window_s, 1) for k, v in top}
        stop_all(procs)
        memory["portals_per_process_at_end"] = [
            len(served(workdir / f"{name}-w{k}.log")) for k in range(processes)
        ]
        rates: dict[str, float] = {}
        thirds: dict[str, list[float]] = {}
        latencies: list[int] = []
        third_ms = (t1_ms - t0_ms) / THIRDS
        for p in serve_ids:
            rows = await outcomes(r, portal_stream(ns.stream, p, None))
            rates[p] = sum(1 for at, _ in rows if t0_ms <= at < t1_ms) / ((t1_ms - t0_ms) / 1000)
            cuts = [t0_ms + k * third_ms for k in range(THIRDS + 1)]
            thirds[p] = [
                sum(1 for at, _ in rows if cuts[k] <= at < cuts[k + 1]) / (third_ms / 1000)
                for k in range(THIRDS)
            ]
            if p in trickle_ids:
                latencies += [at - added for at, added in rows if t0_ms <= added < t1_ms - 5000]
        redis_ops_s = (cmds1 - cmds0) / ((t1_ms - t0_ms) / 1000)
        cpu = [(b - a) / window_s for a, b in zip(cpu0, cpu1, strict=True)]
        return Run(name, rates, thirds, latencies, cpu, load, window_s, redis_ops_s, memory)
    finally:
        await ns.cleanup()
        await r.aclose()


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    workdir = Path(args.workdir)
    ensure_dir(workdir)
    emu = subprocess.Popen(  # noqa: ASYNC220 - started once
        [sys.executable, "-m", "bench.portals", "--serve", str(args.portals)],
        stdout=subprocess.PIPE,
        stderr=(workdir / "emulator.log").open("wb"),
    )
    try:
        assert emu.stdout is not None
        line = emu.stdout.readline().decode().split()
        port = int(line[1])
        key = new_key()
        db = f"sqlite+aiosqlite:///{workdir / 'portals.sqlite3'}"
        (workdir / "portals.sqlite3").unlink(missing_ok=True)
        registry = await PortalRegistry.connect(db, box=SecretBox([key]))
        for i in range(args.portals):
            url = f"http://{host(i)}:{port}/rest/1/emulator-secret/"
            await registry.add(
                PortalRecord(
                    pid(i), "webhook", url.split("/rest/", maxsplit=1)[0] + "/rest/", webhook_url=url
                )
            )
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "REDIS_URL", "DATABASE_URL"))
        }
        env |= {
            "REDIS_URL": redis_url(),
            "DATABASE_URL": db,
            "BITRIX_WORKER_SECRETS_KEY": key,
            "BITRIX_WORKER_HTTP_PORT": "0",
            "BITRIX_WORKER_LOG_FORMAT": "json",
            "BITRIX_WORKER_LOG_SUCCESSES": "false",
            "BITRIX_WORKER_CLAIM_IDLE_MS": "15000",  # heartbeats (and rebalancing) every 5 s
        }
        ids = [pid(i) for i in range(args.portals)]
        hot, others = ids[0], ids[1:]
        common = {
            "workdir": workdir,
            "env": env,
            "warmup_s": args.warmup_s,
            "window_s": args.window_s,
            "processes": args.processes,
        }
        results: list[dict[str, Any]] = []
        busy = ids[: args.backlog_portals]
        # enough for the initial bucket (50 requests of 50) and the limit over warm-up and window, +10%
        per_portal = args.backlog_ops or int((2500 + LIMIT_OPS_S * (args.warmup_s + args.window_s)) * 1.1)
        for name in args.scenarios.split(",") * args.repeat:  # rounds in turn: the machine's load varies
            # broken: the first backlog portal's webhook secret is wrong (every call refused); else right
            secret = "wrong-secret" if name == "broken" else "emulator-secret"
            first = f"http://{host(0)}:{port}/rest/1/{secret}/"
            await registry.add(webhook_portal(pid(0), first), replace=True)
            hot_run = name in {"hot", "hot-shared"}
            many = name in {"idle", "trickle"} or hot_run  # all the portals; else the backlog ones
            serve_ids = ids if many else busy[1:] if name == "nineteen" else busy
            queued = {hot: args.hot_ops} if hot_run else {} if many else dict.fromkeys(serve_ids, per_portal)
            run = await scenario(
                name,
                serve_ids=serve_ids,
                backlog=queued,
                trickle_ids=others if name == "trickle" or hot_run else [],
                extra_env=NO_PLACEMENT if name == "hot-shared" else {},
                **common,
            )
            measured = [] if many else busy[1:] if name in {"broken", "nineteen"} else busy
            row = run.summary(hot if hot_run else None, measured)
            if name == "broken":
                row["broken_portal_ops_s"] = round(run.rates.get(busy[0], 0.0), 1)
            results.append(row)
            print(json.dumps(row), flush=True)
        await registry.close()
        return results
    finally:
        emu.kill()
        emu.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--portals", type=int, default=100)
    parser.add_argument("--hot-ops", type=int, default=50_000)
    parser.add_argument("--backlog-portals", type=int, default=20)
    parser.add_argument("--backlog-ops", type=int, default=0, help="per portal; 0: enough for the run")
    parser.add_argument("--warmup-s", type=float, default=40.0)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--scenarios", default="idle,trickle,hot,hot-shared,backlog,nineteen,broken")
    parser.add_argument("--repeat", type=int, default=1, help="run the scenarios this many rounds")
    parser.add_argument("--workdir", default="/tmp/bench-portals")
    parser.add_argument(
        "--processes", type=int, default=2, help="worker processes (1: one loop serves every portal)"
    )
    parsed = parser.parse_args()
    if parsed.serve:
        serve(parsed.serve, 0)
    else:
        started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        rows = asyncio.run(main(parsed))
        print(json.dumps(rows, indent=2))
        ensure_dir(RESULTS_DIR)
        raw = {"command": " ".join(sys.argv), "started": started, "cpus": os.cpu_count(), "runs": rows}
        (RESULTS_DIR / f"portals-{started}.json").write_text(json.dumps(raw, indent=2) + "\n")
