"""Benchmark 3: calls spent per the minimum necessary under a fault mix, for our worker and the naive one.

The mix (portal at its default limits, burst 50 / drain 2/s):

* 3% of the updates target deals that were deleted in Bitrix24 (deleted via the admin API before the run);
* 2% carry invalid data (``CURRENCY_ID: "XXX"``: refused by the worker's field validation before any call,
  by the portal's field check with ``validate_fields`` off; ``bench.validation_calls`` compares the two);
* 5% of ``crm.deal.update`` commands answer INTERNAL_SERVER_ERROR without running (random, seeded);
* bursts of limit errors: every 50th..52nd HTTP request is refused with QUERY_LIMIT_EXCEEDED, 4 bursts;
* one auth outage: every request answers INVALID_CREDENTIALS for 5 s, starting 15 s into the run.

Minimum necessary calls (what a perfect client that knows nothing in advance must spend):

* commands: one per operation (an update of a deleted deal needs its one "Not found"; invalid data needs its
  one refusal), plus one more for every command the portal failed with a 500 (the failed attempt and the
  successful one). Refused requests execute no command.
* HTTP requests: ``ceil((operations + injected 500s) / 50)`` batches, plus every request the injected
  limit bursts refuse (a refusal consumes a request whoever sends it), plus one request refused by the auth
  outage (someone must find out; the next successful request is already counted).

Spent calls are counted by the emulator: ``requests`` = every HTTP request it received; commands = every
command it ran or refused individually (per-method statistics without the outer ``batch`` and without
requests refused at the front door). The naive worker sends one command per request, so for it the
requests it sends are also the commands it sends.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .common import (
    Admin,
    Emulator,
    Namespace,
    diff_stats,
    enqueue_payloads,
    ensure_dir,
    key_of,
    redis_url,
    spawn_worker,
    stop_all,
    update_payload,
    wait_all,
    worker_env,
)
from .naive import run_naive
from .throughput import prepare_portal

FRONT_DOOR = ("QUERY_LIMIT_EXCEEDED", "INVALID_CREDENTIALS", "OVERLOAD_LIMIT")
LIMIT_BURSTS = 4


@dataclass(frozen=True)
class FaultMix:
    """The injected part of the mix (deleted deals and invalid data are in the workload itself)."""

    rate_500: float = 0.05
    bursts: int = LIMIT_BURSTS
    burst_len: int = 3
    burst_every: int = 50  # requests between the starts of two bursts
    outage_start_s: float | None = 15.0
    outage_s: float = 5.0

    def rules(self) -> list[dict[str, Any]]:
        burst = ["ok"] * (self.burst_every - self.burst_len) + ["rate_limit"] * self.burst_len
        return [
            {"method": "*", "scope": "request", "sequence": burst * self.bursts},
            {"method": "crm.deal.update", "scope": "any", "kind": "500", "probability": self.rate_500},
        ]

    def outage(self) -> dict[str, float] | None:
        if self.outage_start_s is None:
            return None
        return {"start_s": self.outage_start_s, "duration_s": self.outage_s}


def kind_of(i: int) -> str:
    """Which slice of the mix operation ``i`` belongs to (deterministic, spread evenly)."""
    r = i % 100
    if r < 3:
        return "deleted"
    if r < 5:
        return "invalid"
    return "valid"


def fields_for(i: int) -> dict[str, Any]:
    if kind_of(i) == "invalid":
        return {"STAGE_ID": "WON", "CURRENCY_ID": "XXX"}
    return {"STAGE_ID": "WON"}


def executed_commands(delta: dict[str, Any]) -> int:
    return sum(
        n
        for method, per in delta["calls"].items()
        if method != "batch"
        for outcome, n in per.items()
        if outcome not in FRONT_DOOR
    )


def front_door_refusals(delta: dict[str, Any], code: str) -> int:
    return sum(int(per.get(code, 0)) for per in delta["calls"].values())


def excess(delta: dict[str, Any], *, batch: int = 50) -> dict[str, int]:
    """Where the requests went, from the portal's statistics: requests carrying operations (batches and
    lone calls of the operation's method) against the fewest that could carry the same commands; reads that
    carry no operation (the start check, the field schema, the probe after a pause); front-door refusals.
    Batches that only read (the emulator counts them) are reads, not requests carrying operations."""
    sizes = {int(k): v for k, v in delta.get("batch_sizes", {}).items()}
    update = delta["calls"].get("crm.deal.update", {})
    commands = sum(n for outcome, n in update.items() if outcome not in FRONT_DOOR)
    read_batches = int(delta.get("read_batches", 0))  # batches of reads only (the field schema's)
    in_batches = sum(k * v for k, v in sizes.items()) - int(delta.get("read_batch_commands", 0))
    lone = max(0, commands - in_batches)  # updates not in a batch went out as plain calls, one request each
    with_ops = sum(sizes.values()) - read_batches + lone
    refused = {code: front_door_refusals(delta, code) for code in FRONT_DOOR}
    reads = delta["requests"] - with_ops - sum(refused.values())
    return {
        "requests_with_operations": with_ops,
        "fewest_for_those_commands": math.ceil(commands / batch),
        "partial_batches": sum(v for k, v in sizes.items() if k < batch) - read_batches,
        "lone_calls": lone,
        "reads_without_operations": reads,
        "limit_refusals": refused["QUERY_LIMIT_EXCEEDED"],
        "auth_refusals": refused["INVALID_CREDENTIALS"],
    }


def minimum(ops: int, delta: dict[str, Any], *, invalid: int = 0, batch: int = 50) -> dict[str, int]:
    """The minimum for ``ops`` finished operations, given the faults the portal actually answered.

    500s are counted as answered (a 500 the portal picked for a request it then refused at the bucket
    never reached the client). ``invalid`` operations get one policy retry in the ``*_policy`` variant
    (the taxonomy's deliberate invalid_data budget of 1).
    """
    answered_500 = sum(int(per.get("INTERNAL_SERVER_ERROR", 0)) for per in delta["calls"].values())
    limit_refusals = int(delta["faults_injected"].get("rate_limit", 0))
    auth = 1 if front_door_refusals(delta, "INVALID_CREDENTIALS") else 0
    commands = ops + answered_500
    return {
        "commands": commands,
        "requests_batched": math.ceil(commands / batch) + limit_refusals + auth,
        "requests_one_per_command": commands + limit_refusals + auth,
        "commands_policy": commands + invalid,
        "requests_batched_policy": math.ceil((commands + invalid) / batch) + limit_refusals + auth,
        "answered_500": answered_500,
        "injected_limit_refusals": limit_refusals,
        "auth_outage_refusals": front_door_refusals(delta, "INVALID_CREDENTIALS"),
    }


def describe(delta: dict[str, Any]) -> str:
    """What the portal received between two looks at its statistics, e.g. ``batch 50, batch 7 (reads)``."""
    sizes = {int(k): v for k, v in delta.get("batch_sizes", {}).items()}
    reads = int(delta.get("read_batches", 0))
    parts = [f"batch {k}" for k, v in sorted(sizes.items(), reverse=True) for _ in range(v)]
    if reads:
        parts.append(f"({reads} of them reads only)")
    refused = {code: front_door_refusals(delta, code) for code in FRONT_DOOR}
    parts += [f"{n} {code}" for code, n in refused.items() if n]
    other = plain_calls(delta)
    if other:  # plain calls: a lone update, or a read (the start check, the probe after a pause)
        plain = {m: sum(per.values()) for m, per in delta["calls"].items() if m != "batch"}
        parts.append(f"{other} plain call(s) {'' if sizes else plain}".rstrip())
    return ", ".join(parts)


def plain_calls(delta: dict[str, Any]) -> int:
    """Requests that were neither a batch the portal ran nor refused at the front door (negative when a
    batch counted here arrived before the look that counted the ones before)."""
    refused = sum(front_door_refusals(delta, code) for code in FRONT_DOOR)
    return int(delta["requests"] - sum(delta.get("batch_sizes", {}).values()) - refused)


async def request_timeline(admin: Admin, done: asyncio.Event, every_s: float = 0.05) -> list[str]:
    """Every change of the portal's statistics while the worker runs, with its time since the start: each
    request but those sent within ``every_s`` of another, so the tail's requests show one by one. A batch is
    counted when it has run, its request on arrival: a change that shows a batch whose request the look
    before counted is merged into the one before it (while many go at once, a batch may still show one look
    late, as "1 plain call" then "-1 plain call"; the tail's requests, one at a time, show as they went)."""
    marks: list[tuple[float, dict[str, Any], dict[str, Any]]] = []  # (seconds, stats before, stats after)
    started, last = time.monotonic(), await admin.stats()
    while not done.is_set():
        await asyncio.sleep(every_s)
        now = await admin.stats()
        if any(now[k] != last[k] for k in ("requests", "calls", "batch_sizes")):
            if marks and plain_calls(diff_stats(now, last)) < 0:
                marks[-1] = (marks[-1][0], marks[-1][1], now)
            else:
                marks.append((time.monotonic() - started, last, now))
            last = now
    deltas = [(t, diff_stats(after, before)) for t, before, after in marks]
    return [f"{t:7.2f}s +{d['requests']}: {describe(d)}" for t, d in deltas]


def unusual(timeline: list[str]) -> list[str]:
    """The timeline without its full batches of 50 (the steady state): what is left says where the requests
    above the fewest went (reads, refusals, partial batches, lone calls)."""
    return [t for t in timeline if set(t.split(": ", 1)[1].split(", ")) != {"batch 50"}]


async def _mixed_portal(
    emu: Emulator, admin: Admin, n: int, database_url: str, limits: tuple[int, float]
) -> dict[str, int]:
    ids = await prepare_portal(emu, admin, n, database_url, limits)
    for i in range(n):
        if kind_of(i) == "deleted":
            await admin.delete_entity("deal", ids[key_of(i)])
    return ids


async def _arm_faults(admin: Admin, mix: FaultMix) -> None:
    await admin.faults(rules=mix.rules(), auth_outage=mix.outage())


async def _outage_after_first_request(admin: Admin, mix: FaultMix, before: int) -> None:
    """Arm the auth outage ``outage_start_s`` after the worker's first request (its start check) instead of
    after the rules: a worker that starts quickly would otherwise meet the outage in its start check, where
    refused credentials are a bad setting and it exits (as it should) instead of running the mix."""
    outage = mix.outage()
    if outage is None:
        return
    while True:  # polled: the emulator has no way to notify a request
        if int((await admin.stats())["requests"]) > before:
            break
        await asyncio.sleep(0.01)
    await admin.faults(auth_outage=outage)


async def run_ours(
    emu: Emulator,
    workdir: Path,
    *,
    n: int,
    timeout_s: float,
    mix: FaultMix = FaultMix(),
    portal_limits: tuple[int, float] = (50, 2.0),
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ensure_dir(workdir)
    admin = Admin(emu.base_url)
    client = aioredis.Redis.from_url(redis_url())
    ns = Namespace(client)
    database_url = f"sqlite+aiosqlite:///{workdir / ('faults-' + ns.prefix.replace(':', '-') + '.sqlite3')}"
    try:
        await _mixed_portal(emu, admin, n, database_url, portal_limits)
        await enqueue_payloads(
            client, ns.stream, (update_payload(key_of(i), fields_for(i)) for i in range(n))
        )
        before = await admin.stats()
        await admin.faults(rules=mix.rules(), auth_outage=None)
        started = time.monotonic()
        env = worker_env(
            webhook_url=emu.webhook_url, ns=ns, database_url=database_url, consumer="w0", **(settings or {})
        )
        proc = spawn_worker(workdir, env, "faults-ours")
        done = asyncio.Event()
        watching = asyncio.create_task(request_timeline(admin, done))
        arming = asyncio.create_task(_outage_after_first_request(admin, mix, int(before["requests"])))
        (code,) = await wait_all([proc], timeout_s)
        arming.cancel()
        elapsed = time.monotonic() - started
        done.set()
        timeline = await watching
        stop_all([proc])
        after = await admin.stats()
        await admin.faults(rules=[], auth_outage=None)
        delta = diff_stats(after, before)
        outcomes = await ns.outcomes()
        dead = await ns.dead_letters()
        counters = await ns.counters()
        result = {
            "client": "bitrix-worker",
            "operations": n,
            "exit_code": code,
            "wall_s": round(elapsed, 2),
            "accounting": _accounting(n, outcomes, dead, counters),
            "portal": delta,
            "requests_but_full_batches": unusual(timeline),  # when and what, in order
        }
        return refresh(result, naive=False)
    finally:
        await admin.faults(rules=[], auth_outage=None)
        await ns.cleanup()
        await client.aclose()
        await admin.aclose()


def _spent(ops: int, delta: dict[str, Any], invalid: int) -> dict[str, Any]:
    need = minimum(ops, delta, invalid=invalid)
    commands = executed_commands(delta)
    refused = sum(front_door_refusals(delta, code) for code in FRONT_DOOR)
    return {
        "requests": delta["requests"],
        "commands": commands,
        "minimum": need,
        "requests_per_minimum": round(delta["requests"] / need["requests_batched"], 4),
        "commands_per_minimum": round(commands / need["commands"], 4),
        "requests_per_minimum_policy": round(delta["requests"] / need["requests_batched_policy"], 4),
        "commands_per_minimum_policy": round(commands / need["commands_policy"], 4),
        "requests_refused_at_front_door": refused,
    }


def refresh(result: dict[str, Any], *, naive: bool) -> dict[str, Any]:
    """Recompute the derived figures from the raw portal counts (so saved results follow the definitions)."""
    done = result["operations_finished"] if naive else result["operations"]
    invalid = sum(1 for i in range(done) if kind_of(i) == "invalid")
    result.update(_spent(done, result["portal"], invalid))
    if not naive:
        result["where_requests_went"] = excess(result["portal"])
    if naive:
        need = result["minimum"]
        result["requests_per_minimum_one_per_command"] = round(
            result["requests"] / need["requests_one_per_command"], 4
        )
        # one command per request: what it *sent*, including commands refused at the front door
        result["commands_sent"] = result["requests"]
        result["commands_sent_per_minimum"] = round(result["requests"] / need["commands"], 4)
    return result


def _accounting(
    n: int,
    outcomes: list[dict[str, str]],
    dead: list[tuple[dict[str, Any], dict[str, Any]]],
    counters: dict[str, int],
) -> dict[str, Any]:
    """Every operation must end exactly once: applied / skipped / dead-lettered, each of the right kind."""
    by_key: dict[str, list[dict[str, str]]] = {}
    for o in outcomes:
        by_key.setdefault(o["ident"].removeprefix("deal:"), []).append(o)
    expected = {key_of(i): kind_of(i) for i in range(n)}
    wrong: list[str] = []
    for key, kind in expected.items():
        got = by_key.get(key, [])
        want = {"valid": "applied", "deleted": "skipped", "invalid": "dead_lettered"}[kind]
        if len(got) != 1 or got[0]["outcome"] != want:
            wrong.append(f"{key}: expected one {want}, got {[g['outcome'] for g in got]}")
    totals: dict[str, int] = {}
    for o in outcomes:
        label = o["outcome"] + (f":{o.get('reason', '')}" if o["outcome"] != "applied" else "")
        totals[label] = totals.get(label, 0) + 1
    return {
        "outcomes": totals,
        "counters": {k: v for k, v in counters.items() if k.startswith("outcome:")},
        "dead_letter_stream": len(dead),
        "dead_letter_classes": sorted({e.get("class", "?") for _, e in dead}),
        "every_operation_accounted": not wrong and len(outcomes) == n,
        "mismatches": wrong[:10],
    }


async def run_naive_faults(
    emu: Emulator,
    workdir: Path,
    *,
    n: int,
    window_s: float,
    mix: FaultMix = FaultMix(),
    portal_limits: tuple[int, float] = (50, 2.0),
) -> dict[str, Any]:
    ensure_dir(workdir)
    admin = Admin(emu.base_url)
    client = aioredis.Redis.from_url(redis_url())
    ns = Namespace(client)
    try:
        db = f"sqlite+aiosqlite:///{workdir / 'naive-faults.sqlite3'}"
        ids = await _mixed_portal(emu, admin, n, db, portal_limits)
        await enqueue_payloads(
            client, ns.stream, (update_payload(key_of(i), fields_for(i)) for i in range(n))
        )
        before = await admin.stats()
        await _arm_faults(admin, mix)
        naive = await run_naive(
            webhook_url=emu.webhook_url, redis_url=redis_url(), stream=ns.stream, ids=ids, window_s=window_s
        )
        after = await admin.stats()
        delta = diff_stats(after, before)
        done = naive.operations
        valid_done = sum(1 for i in range(done) if kind_of(i) == "valid")
        result = {
            "client": "naive (1 call/op, 5 immediate retries)",
            "operations": n,
            **naive.as_dict(),
            "valid_operations_finished": valid_done,
            "valid_operations_given_up": valid_done - naive.applied,
            "portal": delta,
        }
        return refresh(result, naive=True)
    finally:
        await admin.faults(rules=[], auth_outage=None)
        await ns.cleanup()
        await client.aclose()
        await admin.aclose()


async def main(workdir: Path, *, n: int, naive_window_s: float) -> dict[str, Any]:
    emu = await Emulator.start(workdir, seed=11)
    try:
        return {
            "ours": await run_ours(emu, workdir, n=n, timeout_s=n / 30 + 240),
            "naive": await run_naive_faults(emu, workdir, n=n, window_s=naive_window_s),
        }
    finally:
        emu.stop()


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp), n=count, naive_window_s=window)), indent=2))
