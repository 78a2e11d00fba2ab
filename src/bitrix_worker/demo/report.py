"""The demo's closing report: outcomes, the Bitrix24 requests spent against a naive policy, dead letters.

The naive policy is what a first integration usually does: one request per operation (no batching, no
coalescing, no mapping store or versions) and every error retried 5 times. Its cost is computed from the
same outcomes, so both columns describe the same operations.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..config import Settings
from ..emulator import EmulatorAdmin
from ..redis.connection import RedisClient
from ..redis.deadletter import DeadLetters
from ..redis.gauges import QueueReader, outcome_records

NAIVE_RETRIES = 5
NAIVE_FORMULA = (
    "naive = Σ applied (1 + failed attempts it met) + stale × 1 (no versions: it would send them) "
    f"+ (every other skipped or dead-lettered operation) × (1 + {NAIVE_RETRIES}); one request per operation"
)


def naive_requests(records: list[dict[str, str]], unrecorded_dead: int) -> int:
    total = unrecorded_dead * (1 + NAIVE_RETRIES)
    for r in records:
        if r["outcome"] == "applied":
            total += 1 + int(r.get("attempts", "0"))
        elif r["outcome"] == "skipped" and r["reason"] == "stale":
            total += 1
        else:
            total += 1 + NAIVE_RETRIES
    return total


def _outcomes_table(records: list[dict[str, str]], unrecorded_dead: int, retries: int) -> Table:
    groups = Counter((r["outcome"], r["reason"], r.get("class", "")) for r in records)
    if unrecorded_dead:
        groups["dead_lettered", "unreadable payload", "poison"] += unrecorded_dead
    title = f"Outcomes ({retries} retries scheduled on the way)"
    table = Table("outcome", "reason", "last error class", "operations", title=title)
    for (outcome, reason, cls), n in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[1])):
        table.add_row(outcome, escape(reason), cls or "-", str(n))
    return table


def _calls_table(stats: dict[str, Any], records: list[dict[str, str]], unrecorded_dead: int) -> Table:
    calls: dict[str, dict[str, int]] = stats.get("calls", {})

    def n(method: str) -> int:
        return sum(calls.get(method, {}).values())

    sent = sum(
        n(m) for m in calls if m.startswith("crm.") and m.split(".")[-1] in ("add", "update", "delete")
    )
    table = Table("", "Bitrix24 requests", title="Bitrix24 calls spent")
    table.add_row("this worker: HTTP requests (what the rate limit counts)", str(stats.get("requests", 0)))
    table.add_row("  of which batch requests", str(n("batch")))
    table.add_row("  add/update/delete commands sent (inside batches or alone)", str(sent))
    table.add_row("  product row sets (crm.item.productrow.set)", str(n("crm.item.productrow.set")))
    table.add_row("  look-ups after an ambiguous create (crm.deal.list)", str(n("crm.deal.list")))
    table.add_row("  read-only breaker probes (crm.deal.fields)", str(n("crm.deal.fields")))
    refused = sum(c.get("INVALID_CREDENTIALS", 0) for c in calls.values())
    table.add_row("  answered INVALID_CREDENTIALS (the auth outage)", str(refused))
    table.add_row("naive policy (formula below)", str(naive_requests(records, unrecorded_dead)))
    return table


def _orders_table(
    records: list[dict[str, str]],
    deals: list[dict[str, Any]],
    contacts: list[dict[str, Any]],
    rows: list[Any],
) -> tuple[Table, int]:
    """Orders = a customer (contact), a deal referring to it by key and product rows: what the operations
    did, and what Bitrix24 holds. Returns the table and the orders found complete there."""
    applied = Counter(r["ident"].split(":", 1)[0] for r in records if r["outcome"] == "applied")
    contact_id = {str(c.get("ORIGIN_ID")): str(c["ID"]) for c in contacts}
    rows_of = Counter(int(r["ownerId"]) for r in rows if r.get("ownerType") == "D")
    linked = [
        d
        for d in deals
        if str(d.get("CONTACT_ID"))
        == contact_id.get(str(d.get("ORIGIN_ID")).replace("order-", "customer-", 1))
    ]
    complete = sum(1 for d in linked if rows_of[int(d["ID"])] > 0)
    unresolved = sum(1 for r in records if r.get("code") == "ref_unresolved")
    table = Table("", "count", title="Orders (customer + deal with a $ref + product rows)")
    table.add_row("customer (contact) operations applied", str(applied["contact"]))
    table.add_row("deal operations applied", str(applied["deal"]))
    table.add_row("orders in Bitrix24 linked to their own customer, with product rows", str(complete))
    table.add_row("  product rows they carry", str(sum(rows_of[int(d["ID"])] for d in linked)))
    table.add_row("deals linked to a wrong or no customer", str(len(deals) - len(linked)))
    table.add_row("dead-lettered: reference unresolved (ref_unresolved)", str(unresolved))
    return table, complete


def _dead_table(entries: list[Any], size: int) -> Table:
    shown = f" (first {len(entries)} of {size})" if size > len(entries) else ""
    table = Table("key", "op", "class", "description", title=f"Dead letters{shown}")
    for e in entries:
        op = e.operation.get("op", "?")
        cells = [e.key, str(op), e.error_class, str(e.error.get("description", ""))[:80]]
        table.add_row(*map(escape, cells))
    return table


async def final_report(
    redis: RedisClient, settings: Settings, admin: EmulatorAdmin, console: Console, *, enqueued: int
) -> bool:
    """Print the tables; True when every enqueued operation has exactly one outcome and nothing is left."""
    records = await outcome_records(redis, settings.keys)
    reader = QueueReader(redis, settings.keys, settings.group)
    counters = await reader.counters()
    finals = {o: counters.get(f"outcome:{o}", 0) for o in ("applied", "skipped", "dead_lettered")}
    unrecorded_dead = max(0, sum(finals.values()) - len(records))  # unreadable entries have no key
    dead = DeadLetters(redis, settings.keys)
    entries = await dead.entries(newest=False, limit=40)
    stats = await admin.stats()
    deals = await admin.entities("deal")
    orders, _ = _orders_table(records, deals, await admin.entities("contact"), await admin.product_rows())
    origins = Counter(d.get("ORIGIN_ID") for d in deals)
    duplicates = sum(c - 1 for c in origins.values())
    console.print(_outcomes_table(records, unrecorded_dead, counters.get("retries", 0)))
    console.print(orders)
    console.print(_calls_table(stats, records, unrecorded_dead))
    console.print(NAIVE_FORMULA, highlight=False)
    console.print(_dead_table(entries, await dead.size()))
    gauges = await reader.gauges()
    left = gauges.stream_length + gauges.scheduled
    accounted = sum(finals.values()) == enqueued and left == 0
    verdict = "every operation accounted for" if accounted else "NOT all operations accounted for"
    console.print(
        f"{verdict}: {enqueued} enqueued = {finals['applied']} applied + {finals['skipped']} skipped + "
        f"{finals['dead_lettered']} dead-lettered; {left} left in the stream or schedule; "
        f"{len(deals)} deals in Bitrix24, {duplicates} duplicates",
        highlight=False,
    )
    return accounted and duplicates == 0
