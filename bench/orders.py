"""Benchmark: orders/s at the portal's default limits (burst 50, drain 2 requests/s).

An order is what a shop's producer writes for one sale, back to back in one stream: a contact upsert
(``customer-<n>``), a deal upsert (``order-<n>``) whose ``CONTACT_ID`` is
``{"$ref": "contact:customer-<n>"}``, with 3 product rows in ``products``. Nothing exists in the portal or
the mapping store before the run.

The bucket is emptied before the clock starts, so the first 50 requests go through at once (the burst);
the sustained rate is measured from the moment the run had sent 55 requests until 90% of the work was done.
Work is counted in commands the portal applied (3 per order: contact, deal, rows set; orders = commands / 3),
because a backlog's contacts tend to go before their deals, so finished orders alone would bunch at the end.
The emulator's call statistics, sampled every 0.25 s, give the time series. ``orders_per_s_at_drain_rate``
is 2 requests/s divided by the run's requests per order.

The naive client is the usual hand-written integration: one call per step in sequence (``crm.contact.add``,
then ``crm.deal.add`` with the returned id, then ``crm.item.productrow.set`` from a second client for rows),
each retried at once up to 5 times on any error, for a bounded window.

    python -m bench.orders [orders] [naive_window_s] [offered_orders_per_s]   # 3000 60 40

writes bench/results/orders-<time>.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from .common import (
    Admin,
    Emulator,
    Namespace,
    enqueue_payloads,
    ensure_dir,
    ok_calls,
    redis_url,
    refusals,
    spawn_worker,
    stop_all,
    wait_all,
    worker_env,
)
from .naive import RETRIES

ROWS = [
    {"PRODUCT_NAME": "Mug", "PRICE": 9.5, "QUANTITY": 2},
    {"PRODUCT_NAME": "Plate", "PRICE": 4, "QUANTITY": 1},
    {"PRODUCT_NAME": "Bowl", "PRICE": 6, "QUANTITY": 3},
]
ROWS_METHOD = "crm.item.productrow.set"
ORDER_METHODS = ("crm.contact.add", "crm.deal.add", ROWS_METHOD)
TARGET_ORDERS_PER_S = 30.0


@dataclass
class CommandSampler:
    """Polls the emulator every ``interval_s``: (t, order commands applied, requests, refusals). An order is
    3 commands (contact, deal, rows set), so commands / 3 is the work done in orders whatever the mix of
    the moment (a backlog's contacts tend to go first, their deals after)."""

    admin: Admin
    interval_s: float = 0.25
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    t0: float = 0.0
    _task: asyncio.Task[None] | None = None

    async def sample(self) -> None:
        stats = await self.admin.stats()
        done = sum(ok_calls(stats, m) for m in ORDER_METHODS)
        self.samples.append((time.monotonic() - self.t0, done, stats["requests"], refusals(stats)))

    async def _loop(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sample()


def sustained(samples: list[tuple[float, int, int, int]], n: int, *, burst: int) -> dict[str, Any]:
    """Orders/s after the portal's burst: from the first sample after the run had sent ``burst`` + 5
    requests (the bucket is full from then on and drains at its rate) until 90% of the order commands
    were applied; orders = commands / 3. The burst-inclusive rate (first command to the last) is beside it,
    labelled so."""
    base = samples[0]
    rel = [(t, c - base[1], r - base[2], q - base[3]) for t, c, r, q in samples]
    total = 3 * n
    first = next((s for s in rel if s[1] > 0), rel[-1])
    last = next((s for s in rel if s[1] >= total), rel[-1])
    start = next((s for s in rel if s[2] >= burst + 5), None)
    end = next((s for s in rel if s[1] >= 0.9 * total), rel[-1])
    out: dict[str, Any] = {
        "burst_inclusive_orders_per_s": round(n / (last[0] - first[0]), 2) if last[0] > first[0] else None,
    }
    if start is None or end[0] <= start[0] or end[1] <= start[1]:
        out["steady_orders_per_s"] = None  # too few orders to get past the burst
        return out
    span = end[0] - start[0]
    out.update(
        steady_window_s=round(span, 2),
        steady_window_orders=round((end[1] - start[1]) / 3, 1),
        steady_orders_per_s=round((end[1] - start[1]) / 3 / span, 2),
        steady_requests_per_s=round((end[2] - start[2]) / span, 2),
        steady_refusals=end[3] - start[3],
    )
    return out


def order_payloads(n: int) -> list[str]:
    """The three operations of order ``n``, in the producer's order (the wire format of the README)."""
    contact = {
        "op": "upsert",
        "entity": "contact",
        "key": f"customer-{n}",
        "fields": {"NAME": f"Customer {n}"},
    }
    deal = {
        "op": "upsert",
        "entity": "deal",
        "key": f"order-{n}",
        "fields": {"TITLE": f"Order {n}", "CONTACT_ID": {"$ref": f"contact:customer-{n}"}},
        "products": ROWS,
    }
    return [json.dumps(contact, separators=(",", ":")), json.dumps(deal, separators=(",", ":"))]


async def audit(admin: Admin, n: int) -> dict[str, int]:
    """Duplicates, deals not linked to their own contact, and deals whose rows are not the order's 3."""
    contacts = await admin.entities("contact")
    deals = await admin.entities("deal")
    contact_ids = {c["ORIGIN_ID"]: str(c["ID"]) for c in contacts}
    rows = (await admin.http.get("/productrows")).raise_for_status().json()["rows"]
    per_owner: dict[int, int] = {}
    for r in rows:
        per_owner[int(r["ownerId"])] = per_owner.get(int(r["ownerId"]), 0) + 1
    unlinked = sum(
        1
        for d in deals
        if str(d.get("CONTACT_ID")) != contact_ids.get(str(d["ORIGIN_ID"]).replace("order-", "customer-"))
    )
    return {
        "contacts": len(contacts),
        "deals": len(deals),
        "duplicate_contacts": len(contacts) - len(contact_ids),
        "duplicate_deals": len(deals) - len({d["ORIGIN_ID"] for d in deals}),
        "deals_not_linked_to_their_contact": unlinked,
        "deals_with_wrong_rows": sum(1 for d in deals if per_owner.get(int(d["ID"]), 0) != len(ROWS)),
        "orders_missing": n - len(deals),
    }


async def prepare(admin: Admin, limits: tuple[int, float]) -> None:
    await admin.reset()
    await admin.limits(limits_enabled=True, burst=limits[0], drain_per_s=limits[1])
    await admin.empty_bucket()


async def run_ours(
    emu: Emulator,
    workdir: Path,
    *,
    n: int,
    processes: int = 1,
    timeout_s: float = 600.0,
    settings: dict[str, Any] | None = None,
    limits: tuple[int, float] = (50, 2.0),
    offered_per_s: float | None = None,
) -> dict[str, Any]:
    """``n`` orders through ``processes`` worker processes at the given portal limits: all waiting in the
    stream before the workers start (a backlog), or, with ``offered_per_s``, written by a producer at that
    pace while the workers run (contacts, deals and the deals' hand-offs then mix in every claim)."""
    ensure_dir(workdir)
    admin = Admin(emu.base_url)
    client = aioredis.Redis.from_url(redis_url())
    ns = Namespace(client)
    database_url = f"sqlite+aiosqlite:///{workdir / ('mapping-' + ns.prefix.replace(':', '-') + '.sqlite3')}"
    try:
        await prepare(admin, limits)
        if offered_per_s is None:
            await enqueue_payloads(client, ns.stream, (p for i in range(n) for p in order_payloads(i)))
        before = await admin.stats()
        sampler = CommandSampler(admin)
        sampler.start()
        started = time.monotonic()
        procs = [
            spawn_worker(
                workdir,
                worker_env(
                    webhook_url=emu.webhook_url,
                    ns=ns,
                    database_url=database_url,
                    consumer=f"w{i}",
                    **(settings or {}),
                ),
                f"orders-{processes}p-w{i}",
                until_idle=offered_per_s is None,
            )
            for i in range(processes)
        ]
        if offered_per_s is None:
            codes = await wait_all(procs, timeout_s)
        else:
            await produce(client, ns, n, offered_per_s)
            await until_outcomes(ns, 2 * n, timeout_s)
            codes = [p.poll() for p in procs]
        elapsed = time.monotonic() - started
        stop_all(procs)
        await sampler.stop()
        after = await admin.stats()
        counters = await ns.counters()
        requests = after["requests"] - before["requests"]
        done = ok_calls(after, ROWS_METHOD) - ok_calls(before, ROWS_METHOD)
        result = {
            "client": "bitrix-worker",
            "processes": processes,
            "orders": n,
            "operations": 2 * n,
            "offered_orders_per_s": offered_per_s or "all waiting at the start",
            "limits": {
                "burst": limits[0],
                "drain_per_s": limits[1],
                "bucket": "empty at start (a full burst allowed)",
            },
            "settings": settings or {},
            "exit_codes": codes,
            "wall_s": round(elapsed, 2),
            "orders_done_by_portal": done,
            "outcomes": {k: v for k, v in counters.items() if k.startswith("outcome:")},
            "requests": requests,
            "requests_per_order": round(requests / n, 4),
            "refusals_total": refusals(after) - refusals(before),
            "audit": await audit(admin, n),
            **sustained(sampler.samples, n, burst=limits[0]),
        }
        # what the portal's drain rate buys at this cost per order (the figure a long run converges to)
        result["orders_per_s_at_drain_rate"] = round(limits[1] / result["requests_per_order"], 2)
        result["target_orders_per_s"] = TARGET_ORDERS_PER_S
        return result
    finally:
        await ns.cleanup()
        await client.aclose()
        await admin.aclose()


async def produce(client: aioredis.Redis, ns: Namespace, n: int, per_s: float) -> None:
    """Write ``n`` orders at ``per_s`` orders a second, in ticks of 0.25 s."""
    started, sent = time.monotonic(), 0
    while sent < n:
        due = min(n, int((time.monotonic() - started) * per_s) + 1)
        await enqueue_payloads(client, ns.stream, (p for i in range(sent, due) for p in order_payloads(i)))
        sent = due
        await asyncio.sleep(0.25)


async def until_outcomes(ns: Namespace, total: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counters = await ns.counters()
        if sum(v for k, v in counters.items() if k.startswith("outcome:")) >= total:
            return
        await asyncio.sleep(0.25)


async def _call(http: httpx.AsyncClient, url: str, params: dict[str, Any], tally: dict[str, int]) -> Any:
    """One step, retried at once on any error up to RETRIES times; the result, or None (given up)."""
    for _ in range(1 + RETRIES):
        tally["requests"] += 1
        try:
            body = (await http.post(url, json=params)).json()
        except (httpx.HTTPError, ValueError):
            continue
        if body.get("error"):
            if body["error"] == "QUERY_LIMIT_EXCEEDED":
                tally["refusals"] += 1
            continue
        return body["result"]
    tally["given_up"] += 1
    return None


async def run_naive(
    emu: Emulator, *, window_s: float, limits: tuple[int, float] = (50, 2.0)
) -> dict[str, Any]:
    """The naive integration for ``window_s`` seconds: orders completed, requests, refusals."""
    admin = Admin(emu.base_url)
    tally = {"requests": 0, "refusals": 0, "given_up": 0}
    orders = 0
    try:
        await prepare(admin, limits)
        hook = emu.webhook_url
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=30) as http, httpx.AsyncClient(timeout=30) as rows_http:
            n = 0
            while time.monotonic() - started < window_s:
                contact = await _call(http, hook + "crm.contact.add", {"fields": {"NAME": f"C{n}"}}, tally)
                if contact is None:
                    n += 1
                    continue
                fields = {"TITLE": f"Order {n}", "CONTACT_ID": int(contact)}
                deal = await _call(http, hook + "crm.deal.add", {"fields": fields}, tally)
                if deal is not None:
                    rows = [{"productName": r["PRODUCT_NAME"], "price": r["PRICE"], "quantity": r["QUANTITY"]}
                            for r in ROWS]  # fmt: skip
                    params = {"ownerType": "D", "ownerId": int(deal), "productRows": rows}
                    if await _call(rows_http, hook + ROWS_METHOD, params, tally) is not None:
                        orders += 1
                n += 1
        window = time.monotonic() - started
        return {
            "client": "naive (one call per step, a second client for rows)",
            "window_s": round(window, 2),
            "orders_done": orders,
            "orders_per_s": round(orders / window, 3),
            "requests": tally["requests"],
            "requests_per_order": round(tally["requests"] / orders, 2) if orders else None,
            "refusals_total": tally["refusals"],
            "steps_given_up": tally["given_up"],
        }
    finally:
        await admin.aclose()


async def main(
    workdir: Path, *, n: int, naive_window_s: float, offered_per_s: float = 40.0
) -> dict[str, Any]:
    """The backlog run, the streamed run (orders offered at ``offered_per_s``), then the naive client."""
    emu = await Emulator.start(workdir)
    try:
        backlog = await run_ours(emu, workdir, n=n, timeout_s=n / 5 + 120)
        streamed = await run_ours(emu, workdir, n=n, timeout_s=n / 5 + 120, offered_per_s=offered_per_s)
        naive = await run_naive(emu, window_s=naive_window_s)
        return {"backlog": backlog, "streamed": streamed, "naive": naive}
    finally:
        emu.stop()


if __name__ == "__main__":
    import sys
    import tempfile

    from .common import RESULTS_DIR

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    offered = float(sys.argv[3]) if len(sys.argv) > 3 else 40.0
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(main(Path(tmp), n=count, naive_window_s=window, offered_per_s=offered))
    record = {
        "command": "python -m bench.orders " + " ".join(sys.argv[1:]),
        "started_at": stamp,
        "results": out,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"orders-{stamp}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
