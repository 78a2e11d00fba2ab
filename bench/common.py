"""Shared plumbing for the benchmarks: the emulator and workers as subprocesses, a Redis namespace, a fast
path that pre-creates deals (emulator at no limits + seeded mapping store), and samplers for time series.

Everything here is measurement equipment, not product code: it talks to the emulator's admin API and to
Redis directly, and starts ``bitrix-worker run --until-idle`` exactly as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import httpx
import redis.asyncio as aioredis

from bitrix_worker.defaults import StreamKeys, portal_limiter_key
from bitrix_worker.mapping import Mapping, MappingStore

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
BENCH_REDIS_DB = int(os.environ.get("BITRIX_WORKER_BENCH_REDIS_DB", "12"))
CLI = ["-c", "from bitrix_worker.cli import main; main()"]
SECRET = "emulator-secret"


def redis_url() -> str:
    """BENCH_REDIS_URL as given (the smoke tests point it at the test Redis), else REDIS_URL with DB 12."""
    if os.environ.get("BENCH_REDIS_URL"):
        return os.environ["BENCH_REDIS_URL"]
    parts = urlparse(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    return urlunparse(parts._replace(path=f"/{BENCH_REDIS_DB}"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _spawn(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=cwd)


# ---- the emulator as a separate process ---------------------------------------------------------------


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/rest/1/{SECRET}/"

    @classmethod
    async def start(
        cls,
        workdir: Path,
        *,
        no_limits: bool = False,
        burst: int = 50,
        drain: float = 2.0,
        faults: dict[str, Any] | None = None,
        seed: int | None = 7,
        drain_per_second: bool = False,
        latency_s: float = 0.0,
    ) -> Emulator:
        ensure_dir(workdir)
        port = free_port()
        args = [sys.executable, *CLI, "emulator", "--port", str(port), "--burst", str(burst)]
        args += ["--drain", str(drain), "--latency", str(latency_s)]
        if drain_per_second:
            args.append("--drain-per-second")
        if no_limits:
            args.append("--no-limits")
        if faults:
            args += ["--faults", json.dumps(faults)]
        if seed is not None:
            args += ["--seed", str(seed)]
        log = workdir / f"emulator-{port}.log"
        proc = _spawn(args, log, workdir)
        emu = cls(proc, port, log)
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient(timeout=1) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"emulator exited with {proc.returncode}: {log.read_text()[-500:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{emu.base_url}/_emulator/stats")).status_code == 200:
                        return emu
                if time.monotonic() > deadline:
                    emu.stop()
                    raise RuntimeError("emulator did not start")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Admin:
    """The emulator's admin API (a thin httpx client; EmulatorAdmin's shape, kept local to the bench)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url + "/_emulator", timeout=30)

    async def stats(self) -> dict[str, Any]:
        return (await self.http.get("/stats")).raise_for_status().json()  # type: ignore[no-any-return]

    async def reset(self, *, keep_faults: bool = False, keep_limits: bool = False) -> None:
        body = {"keep_faults": keep_faults, "keep_limits": keep_limits}
        (await self.http.post("/reset", json=body)).raise_for_status()

    async def limits(self, **changes: Any) -> dict[str, Any]:
        if changes:
            return (await self.http.post("/limits", json=changes)).raise_for_status().json()  # type: ignore[no-any-return]
        return (await self.http.get("/limits")).raise_for_status().json()  # type: ignore[no-any-return]

    async def faults(self, **parts: Any) -> dict[str, Any]:
        if parts:
            return (await self.http.post("/faults", json=parts)).raise_for_status().json()  # type: ignore[no-any-return]
        return (await self.http.get("/faults")).raise_for_status().json()  # type: ignore[no-any-return]

    async def entities(self, entity: str = "deal") -> list[dict[str, Any]]:
        return (await self.http.get(f"/entities/{entity}")).raise_for_status().json()["items"]  # type: ignore[no-any-return]

    async def delete_entity(self, entity: str, entity_id: int) -> None:
        (await self.http.post(f"/entities/{entity}/{entity_id}/delete")).raise_for_status()

    async def empty_bucket(self) -> None:
        """Drain the leaky bucket to zero without touching the store: a huge drain rate, read, restore."""
        current = await self.limits()
        await self.limits(drain_per_s=1e9, drain_per_second=False)
        await self.limits()  # GET drains the bucket lazily at the new rate
        await self.limits(
            drain_per_s=current["drain_per_s"], drain_per_second=current.get("drain_per_second", False)
        )

    async def aclose(self) -> None:
        await self.http.aclose()


def ok_calls(stats: dict[str, Any], method: str) -> int:
    return int(stats["calls"].get(method, {}).get("ok", 0))


def refusals(stats: dict[str, Any]) -> int:
    """Requests the portal refused with QUERY_LIMIT_EXCEEDED (from its leaky bucket or injected)."""
    return sum(int(per.get("QUERY_LIMIT_EXCEEDED", 0)) for per in stats["calls"].values())


def command_count(stats: dict[str, Any]) -> int:
    """Commands the portal received for execution: every per-method count except the outer ``batch``."""
    return sum(sum(per.values()) for m, per in stats["calls"].items() if m != "batch")


def diff_stats(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """``after - before`` for requests and per-method call counts (stats are cumulative)."""
    calls: dict[str, dict[str, int]] = {}
    for method, per in after["calls"].items():
        base = before["calls"].get(method, {})
        diff = {k: v - base.get(k, 0) for k, v in per.items() if v - base.get(k, 0)}
        if diff:
            calls[method] = diff
    injected = {
        k: v - before.get("faults_injected", {}).get(k, 0)
        for k, v in after.get("faults_injected", {}).items()
        if v - before.get("faults_injected", {}).get(k, 0)
    }
    sizes = {
        k: v - before.get("batch_sizes", {}).get(k, 0)
        for k, v in after.get("batch_sizes", {}).items()
        if v - before.get("batch_sizes", {}).get(k, 0)
    }
    return {
        "requests": after["requests"] - before["requests"],
        "calls": calls,
        "faults_injected": injected,
        "batch_sizes": sizes,  # commands per batch request the portal ran -> how many such requests
        "read_batches": after.get("read_batches", 0) - before.get("read_batches", 0),  # of those, reads only
        "read_batch_commands": after.get("read_batch_commands", 0) - before.get("read_batch_commands", 0),
    }


# ---- Redis namespace ------------------------------------------------------------------------------------


@dataclass
class Namespace:
    """A unique stream (and so a unique key family) in the benchmark DB; ``cleanup`` deletes it all."""

    redis: aioredis.Redis
    prefix: str = field(default_factory=lambda: f"bench:{uuid.uuid4().hex[:10]}")
    group: str = "bench"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:ops"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def keys(self) -> StreamKeys:
        return StreamKeys(stream=self.stream, dead=self.dead)

    async def cleanup(self) -> None:
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=f"*{self.prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self.redis.unlink(*batch)
                batch = []
        if batch:
            await self.redis.unlink(*batch)

    async def counters(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.counters)
        return {k.decode(): int(v) for k, v in raw.items()}

    async def outcomes(self) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        start = "-"
        while True:
            chunk = await self.redis.xrange(self.keys.outcomes, min=start, count=5000)
            if not chunk:
                return rows
            for _rid, f in chunk:
                rows.append({k.decode(): v.decode() for k, v in f.items()})
            last = chunk[-1][0].decode()
            ms, seq = last.split("-")
            start = f"{ms}-{int(seq) + 1}"

    async def dead_letters(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        rows = await self.redis.xrange(self.dead)
        out = []
        for _, f in rows:
            payload = f.get(b"payload", b"{}")
            out.append((json.loads(payload), json.loads(f.get(b"error", b"{}"))))
        return out


async def reset_portal_limiter(webhook_url: str) -> None:
    """Forget the worker's shared limiter for this portal (it is per portal, not per stream, so a run on
    the same emulator would otherwise inherit the previous run's bookings)."""
    client = aioredis.Redis.from_url(redis_url())
    try:
        await client.delete(portal_limiter_key(urlparse(webhook_url).netloc))
    finally:
        await client.aclose()


def update_payload(key: str, fields: dict[str, Any]) -> str:
    """The producer wire format (operations.encode_operation's output), written without pydantic for speed."""
    return json.dumps({"op": "update", "entity": "deal", "key": key, "fields": fields}, separators=(",", ":"))


async def enqueue_payloads(
    client: aioredis.Redis, stream: str, payloads: Iterable[str], chunk: int = 2000
) -> int:
    """XADD in pipelines of ``chunk``; returns how many were added."""
    n = 0
    pipe = client.pipeline(transaction=False)
    for payload in payloads:
        pipe.xadd(stream, {"payload": payload})
        n += 1
        if n % chunk == 0:
            await pipe.execute()
    await pipe.execute()
    return n


# ---- fast path: deals that already exist, and a mapping store that knows them --------------------------


def key_of(i: int) -> str:
    return f"order-{i}"


async def precreate_deals(webhook_url: str, n: int, *, concurrency: int = 8) -> dict[str, int]:
    """Create ``n`` deals (keys order-0..n-1, our ORIGINATOR_ID/ORIGIN_ID) in batches; limits must be off."""
    from bitrix_worker.bitrix.methods import build_batch, crm_add

    ids: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)

    async def one(start: int, http: httpx.AsyncClient) -> None:
        keys = [key_of(i) for i in range(start, min(n, start + 50))]
        commands = {
            f"c{j}": crm_add("deal", {"TITLE": f"Deal {k}", "ORIGINATOR_ID": "bitrix-worker", "ORIGIN_ID": k})
            for j, k in enumerate(keys)
        }
        request = build_batch(commands)
        async with sem:
            response = await http.post(webhook_url + "batch", json=dict(request.params))
        body = response.raise_for_status().json()["result"]
        if body["result_error"]:
            raise RuntimeError(f"pre-create failed: {body['result_error']}")
        for j, k in enumerate(keys):
            ids[k] = int(body["result"][f"c{j}"])

    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(one(s, http) for s in range(0, n, 50)))
    return ids


async def seed_mapping(database_url: str, ids: dict[str, int]) -> None:
    store = await MappingStore.connect(database_url)
    try:
        rows = [Mapping("deal", k, v, None) for k, v in ids.items()]
        for i in range(0, len(rows), 5000):
            await store.record_many(rows[i : i + 5000])
    finally:
        await store.close()


# ---- workers as subprocesses -----------------------------------------------------------------------------


def worker_env(
    *, webhook_url: str, ns: Namespace, database_url: str, consumer: str, **settings: Any
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "REDIS_URL", "DATABASE_URL"))}
    env.update(
        {
            "BITRIX_WEBHOOK_URL": webhook_url,
            "REDIS_URL": redis_url(),
            "DATABASE_URL": database_url,
            "BITRIX_WORKER_STREAM": ns.stream,
            "BITRIX_WORKER_DEAD_STREAM": ns.dead,
            "BITRIX_WORKER_GROUP": ns.group,
            "BITRIX_WORKER_CONSUMER": consumer,
            "BITRIX_WORKER_HTTP_PORT": "0",
            "BITRIX_WORKER_LOG_FORMAT": "json",
        }
    )
    for name, value in settings.items():
        env[f"BITRIX_WORKER_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def spawn_worker(
    workdir: Path, env: dict[str, str], name: str, *, until_idle: bool = True
) -> subprocess.Popen[bytes]:
    log = workdir / f"{name}.log"
    args = [sys.executable, *CLI, "run"] + (["--until-idle"] if until_idle else [])
    return subprocess.Popen(args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=workdir)


async def wait_all(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> list[int | None]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):  # noqa: ASYNC110 - polling children
        await asyncio.sleep(0.1)
    return [p.poll() for p in procs]


def stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# ---- time series --------------------------------------------------------------------------------------


@dataclass
class Sampler:
    """Polls the emulator's stats every ``interval_s``: (t, applied updates, requests, refusals)."""

    admin: Admin
    method: str = "crm.deal.update"
    interval_s: float = 0.25
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    t0: float = 0.0

    async def _loop(self) -> None:
        while True:
            stats = await self.admin.stats()
            self.samples.append(
                (time.monotonic() - self.t0, ok_calls(stats, self.method), stats["requests"], refusals(stats))
            )
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        stats = await self.admin.stats()
        self.samples.append(
            (time.monotonic() - self.t0, ok_calls(stats, self.method), stats["requests"], refusals(stats))
        )


def _time_at(samples: Sequence[tuple[float, int, int, int]], value: int) -> float:
    """First time the applied count reached ``value`` (linear interpolation between samples)."""
    prev = samples[0]
    for s in samples:
        if s[1] >= value:
            if s[1] == prev[1]:
                return s[0]
            return prev[0] + (s[0] - prev[0]) * (value - prev[1]) / (s[1] - prev[1])
        prev = s
    return samples[-1][0]


def phases(
    samples: Sequence[tuple[float, int, int, int]], *, base: int, total: int, skip_head: int, skip_tail: int
) -> dict[str, Any]:
    """Split a run into the initial burst and the steady state.

    ``base`` is the applied count before the run (stats are cumulative). The steady window runs from the
    moment ``skip_head`` operations were applied (past the portal's burst of 50 requests = 2,500 updates)
    to the moment ``total - skip_tail`` were (before the tail of partial batches). Refusals are counted
    inside that window too.
    """
    rel = [(t, a - base, r, q) for t, a, r, q in samples]
    first = _time_at(rel, 1)
    start_n, end_n = skip_head, max(skip_head + 1, total - skip_tail)
    t_start, t_end = _time_at(rel, start_n), _time_at(rel, end_n)
    done = _time_at(rel, total)
    refused_in = [q for t, _, _, q in rel if t_start <= t <= t_end]
    steady_refusals = (refused_in[-1] - refused_in[0]) if len(refused_in) >= 2 else 0
    steady = (end_n - start_n) / (t_end - t_start) if t_end > t_start else math.nan
    return {
        "first_applied_s": round(first, 2),
        "burst_ops": start_n,
        "burst_s": round(t_start - first, 2),
        "steady_window_ops": end_n - start_n,
        "steady_window_s": round(t_end - t_start, 2),
        "steady_ops_per_s": round(steady, 2),
        "steady_refusals": steady_refusals,
        "all_applied_s": round(done - first, 2),
        "overall_ops_per_s": round(total / (done - first), 2) if done > first else math.nan,
    }
