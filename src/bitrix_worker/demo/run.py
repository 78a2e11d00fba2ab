"""``bitrix-worker demo``: the whole system on one laptop in under a minute, with nothing but this package.

An emulated Bitrix24 with a fault mix (500s, timeouts after commit, an auth outage, deals deleted by a
user), a throw-away Redis, a SQLite mapping store in a temp dir and two worker processes. A few hundred order
operations go through three phases; the report shows how each ended, what it cost in Bitrix24 requests and
what the naive "retry every error 5 times" policy would have cost. Everything started is stopped and, on an
external Redis, every key of the run's own stream is deleted.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..config import Settings, load_settings
from ..emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer, FaultConfig
from ..gate import PortalGate
from ..operations import Entity, Operation, OpKind, encode_operation
from ..producer import enqueue_many
from ..redis.connection import RedisClient
from ..redis.gauges import QueueReader
from ..redis.producing import append_entries
from ..redis.streams import delete_stream_keys
from .backends import InProcessWorker, RedisBackend, WorkerProcesses, redis_backend
from .report import final_report

DEADLINE_S = 50.0
TUNING: dict[str, Any] = {
    "read_timeout_s": 2.0,  # the emulator's timeouts hang 3 s: a short read timeout keeps the demo moving
    "portal_request_timeout_s": 3.5,  # the emulator finishes every request within its 3 s hang
    "connect_timeout_s": 1.0,
    "rate_burst": 50,
    "rate_per_s": 10.0,
    "backoff_base_s": 0.25,
    "backoff_max_s": 2.0,
    "breaker_cooldown_s": 1.0,
    "breaker_max_cooldown_s": 2.0,
    "claim_idle_ms": 5000,
    "block_ms": 200,
    "shutdown_grace_s": 3.0,
    "http_port": 0,
    "log_level": "warning",
    "log_format": "json",
}
FAULTS = FaultConfig.model_validate(
    {
        "hang_s": 3.0,
        "rules": [
            {
                "method": "batch",
                "kind": "timeout_commit",
                "scope": "request",
                "probability": 0.2,
                "max_hits": 2,
            },
            {"method": "crm.deal.*", "kind": "500", "scope": "command", "probability": 0.04},
        ],
    }
)
OUTAGE_S = 2.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    orders: int = 120
    backend: str = "auto"
    workers: int = 2
    seed: int = 7
    prefix: str | None = None  # stream name prefix; unique per run by default
    dashboard_port: int | None = None  # keep the dashboard up on this port at the end (0: any free port)


@dataclass(slots=True)
class Run:
    settings: Settings
    redis: RedisClient
    admin: EmulatorAdmin
    console: Console
    workers: WorkerProcesses | InProcessWorker
    enqueued: int = 0
    started: float = 0.0

    async def done(self) -> dict[str, int]:
        counters = await QueueReader(self.redis, self.settings.keys, self.settings.group).counters()
        return {o: counters.get(f"outcome:{o}", 0) for o in ("applied", "skipped", "dead_lettered")}


def _op(op: OpKind, key: str, version: int, **fields: Any) -> Operation:
    return Operation(op=op, entity=Entity.DEAL, key=key, fields=fields, version=version)


PRODUCTS = (("Mug", 9.5), ("Plate", 4.0), ("Bowl", 6.0), ("Teapot", 24.0))


def customer_of(key: str) -> str:
    """An order's customer key: ``order-10001`` is bought by ``customer-10001``."""
    return key.replace("order-", "customer-", 1)


def phase_one(keys: list[str], rng: random.Random) -> list[Operation]:
    """New orders as a shop writes them: the customer (a contact upsert), the deal referring to it by key
    with its product rows, then the paid update; every 30th order carries a currency Bitrix24 refuses."""
    ops = []
    for i, key in enumerate(keys):
        currency = "XXX" if i % 30 == 7 else "RUB"
        customer = customer_of(key)
        ops.append(
            Operation(op=OpKind.UPSERT, entity=Entity.CONTACT, key=customer, fields={"NAME": customer})
        )
        rows = [{"PRODUCT_NAME": name, "PRICE": price, "QUANTITY": rng.randint(1, 4)}
                for name, price in rng.sample(PRODUCTS, k=rng.randint(1, 3))]  # fmt: skip
        fields = {
            "TITLE": f"Order {key}",
            "CURRENCY_ID": currency,
            "CONTACT_ID": {"$ref": f"contact:{customer}"},
        }
        ops.append(
            Operation(op=OpKind.CREATE, entity=Entity.DEAL, key=key, fields=fields, version=1, products=rows)
        )
        ops.append(_op(OpKind.UPDATE, key, 2, STAGE_ID="PREPARATION", COMMENTS="paid"))
    return ops


async def _enqueue(run: Run, ops: list[Operation], raw: list[dict[str, str]] | None = None) -> None:
    await enqueue_many(run.redis, ops, stream=run.settings.stream)
    await append_entries(run.redis, run.settings.stream, raw or [])
    run.enqueued += len(ops) + len(raw or [])


async def _delete_some(run: Run, keys: list[str], rng: random.Random) -> list[str]:
    """A user deletes a few deals in Bitrix24, behind the worker's back."""
    rows = await run.admin.entities("deal")
    by_key = {r.get("ORIGIN_ID"): int(r["ID"]) for r in rows}
    chosen = rng.sample([k for k in keys if k in by_key], k=max(1, len(keys) // 12))
    for key in chosen:
        await run.admin.delete_entity("deal", by_key[key])
    return chosen


def _progress_view(progress: Progress, line: str) -> Group:
    return Group(progress, Text(line))


async def _wait(run: Run, live: Live, progress: Progress, task: Any, phase: str) -> bool:
    """Until every enqueued operation has an outcome (or the demo's deadline passes), redrawing the view."""
    gate = PortalGate.from_settings(run.redis, run.settings)
    while True:
        done = await run.done()
        total = sum(done.values())
        requests = (await run.admin.stats())["requests"]
        state = await gate.state()
        progress.update(task, completed=total, total=run.enqueued, description=phase)
        line = (
            f"applied {done['applied']}  skipped {done['skipped']}  "
            f"dead-lettered {done['dead_lettered']}  |  "
            f"Bitrix24 requests {requests}  |  breaker {'OPEN: ' + state.reason if state.open else 'closed'}"
            f"  |  workers running {run.workers.running()}"
        )
        live.update(_progress_view(progress, line))
        if total >= run.enqueued:
            return True
        if time.monotonic() - run.started > DEADLINE_S or run.workers.running() == 0:
            return False
        await asyncio.sleep(0.2)


async def _scenario(run: Run, orders: int, rng: random.Random) -> bool:
    keys = [f"order-{10_001 + i}" for i in range(orders)]
    progress = Progress(
        TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    task = progress.add_task("", total=1)
    with Live(_progress_view(progress, ""), console=run.console, refresh_per_second=4) as live:
        await _enqueue(run, phase_one(keys, rng))
        if not await _wait(run, live, progress, task, "1/3 orders created and paid"):
            return False
        await run.admin.set_faults(rules=[])  # phase two shows the auth outage on its own
        deleted = await _delete_some(run, keys, rng)
        run.console.print(f"a user deleted {len(deleted)} deals in Bitrix24 (e.g. {', '.join(deleted[:3])})")
        await run.admin.set_faults(auth_outage={"start_s": 0.0, "duration_s": OUTAGE_S})
        run.console.print(f"the webhook stops working for {OUTAGE_S:.0f} s (INVALID_CREDENTIALS)")
        await _enqueue(run, [_op(OpKind.UPDATE, k, 3, STAGE_ID="WON") for k in keys])
        if not await _wait(run, live, progress, task, "2/3 orders won (auth outage)"):
            return False
        late = [_op(OpKind.UPDATE, k, 2, STAGE_ID="PREPARATION") for k in rng.sample(keys, k=orders // 15)]
        poison = [
            {"payload": "{not json"},
            {"payload": encode_operation(_op(OpKind.UPDATE, keys[0], 4)).replace('"deal"', '"invoice"')},
        ]
        await _enqueue(run, late, poison)
        finished = await _wait(run, live, progress, task, "3/3 late duplicates, bad input")
    run.console.print()
    return finished


async def _delete_run_keys(client: RedisClient, settings: Settings) -> None:
    await delete_stream_keys(client, settings.keys)


def _settings(backend: RedisBackend, emulator: EmulatorServer, tmp: Path, prefix: str) -> Settings:
    stream = f"{prefix}:operations"
    return load_settings(
        webhook_url=emulator.webhook_url,
        redis_url=backend.url,
        database_url=f"sqlite+aiosqlite:///{tmp / 'mapping.sqlite3'}",
        stream=stream,
        dead_stream=f"{{{stream}}}:dead",  # same hash tag as the stream: Redis Cluster ready
        group="bitrix-worker",
        **TUNING,
    )


async def run_demo(opts: DemoOptions, console: Console) -> int:
    """Returns the exit code: 0 when every operation was accounted for."""
    rng = random.Random(opts.seed)
    prefix = opts.prefix or f"demo-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(redis_backend(opts.backend, os.environ.get("REDIS_URL")))
        console.print(f"[bold]Redis:[/] {backend.label}")
        emulator = EmulatorServer(EmulatorConfig(burst=50, drain_per_s=10, seed=opts.seed, faults=FAULTS))
        await stack.enter_async_context(emulator)
        console.print(
            f"[bold]Bitrix24:[/] emulator at {emulator.base_url}, leaky bucket 50 burst / 10 per s "
            "(the cloud drains 2 per s; sped up so the demo fits in a minute); faults: 4% of deal commands "
            "answer 500, up to 2 batch requests commit but time out (3 s hang, 2 s read timeout)"
        )
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bitrix-worker-demo-")))
        settings = _settings(backend, emulator, tmp, prefix)
        admin = EmulatorAdmin(emulator.base_url)
        stack.push_async_callback(admin.aclose)
        if backend.kind == "external":
            stack.push_async_callback(_delete_run_keys, backend.client, settings)
        workers: WorkerProcesses | InProcessWorker
        if backend.kind == "fakeredis":
            workers = InProcessWorker(settings, backend, tmp)
        else:
            workers = WorkerProcesses(settings, opts.workers, tmp)
        stack.push_async_callback(workers.stop)
        await workers.start()
        how = "1 in-process (fakeredis)" if backend.kind == "fakeredis" else f"{opts.workers} processes"
        console.print(f"[bold]Workers:[/] {how}; stream {settings.stream}; SQLite mapping store in {tmp}")
        run = Run(settings, backend.client, admin, console, workers, started=time.monotonic())
        finished = await _scenario(run, opts.orders, rng)
        await workers.stop()
        accounted = await final_report(run.redis, settings, admin, console, enqueued=run.enqueued)
        console.print(f"finished in {time.monotonic() - run.started:.1f} s")
        if not finished:
            console.print(f"[red]not finished within {DEADLINE_S:.0f} s; worker logs were in {tmp}[/]")
        if opts.dashboard_port is not None:
            await keep_dashboard(settings, backend.client, opts.dashboard_port, console)
        return 0 if finished and accounted else 1


async def keep_dashboard(settings: Settings, client: RedisClient, port: int, console: Console) -> None:
    """Serve the dashboard over what the demo just did, on this Redis (even the in-process one), until
    Ctrl-C; everything the demo started is stopped afterwards as usual."""
    import uvicorn

    from ..dashboard.app import create_app
    from ..dashboard.server import bind

    sock = bind("127.0.0.1", port)
    sock.listen(128)  # connections queue from the moment the address is announced
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    console.print(
        f"[bold]Dashboard:[/] {url} — look at what just happened; Ctrl-C ends the demo", highlight=False
    )
    config = uvicorn.Config(
        create_app(settings, redis=client),
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http="h11",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        sock.close()
