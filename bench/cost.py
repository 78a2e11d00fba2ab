"""Benchmark 4: what one worker process costs per update, the current mapping store beside the previous one.

One run, one machine state, both variants:

1. Set-up: an emulator with no limits and no latency; ``deals`` pre-created deals; a backlog of ``backlog``
   updates cycling over them (every one a real ``crm.deal.update``), XADDed in pipelines before any worker
   starts and topped up to ``backlog`` before each window, so every window runs with that many waiting.
2. For each backend (a SQLite file; PostgreSQL in a database created for the run, when one answers), the
   store is seeded with the deals, then ``repeats`` rounds of one measured window per variant, the order
   rotated every round (each variant goes first once in as many rounds as there are variants) so drifting
   machine load hits all alike: *current* is ``bitrix-worker run`` from this checkout; *baseline* is the
   same process with the mapping store of commit 37ab23b installed in place of today's (``bench/baseline``;
   nothing else differs); *previous* (when asked for) is the whole of ``src/`` as of an earlier commit
   (``git archive``), run the same way: the code a round of cost work started from.
3. A window starts at the first update applied after the worker started (imports are not charged) and
   lasts ``window_s``. Operations are counted from the worker's counters hash; CPU per thread comes from
   ``/proc``; RSS is sampled every 0.1 s. ``updates per CPU-second`` = updates / the worker's CPU seconds:
   the rate one process reaches when it has a core to itself, which a shared machine cannot give it.
4. One profiled window per backend and variant: ``py-spy record --gil --threads`` (only the thread holding
   the GIL is sampled) and ``/proc`` CPU per thread over the same seconds; see ``bench/threads.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bitrix_worker.mapping import DEFAULT_TABLE

from . import threads
from .common import (
    CLI,
    ROOT,
    Emulator,
    Namespace,
    enqueue_payloads,
    ensure_dir,
    key_of,
    precreate_deals,
    redis_url,
    seed_mapping,
    stop_all,
    update_payload,
    worker_env,
)

VARIANTS = ("baseline", "previous", "current")
"""Every variant, in the order a round starts with; ``main`` runs ``baseline`` and ``current`` unless told."""
PREVIOUS_COMMIT = "a46049a"
"""The commit the *previous* variant runs by default: the code before the third round of issue 14's cost work
(the second round, measured against 5a6b446, ended with it)."""
BASELINE_CLI = [
    "-c",
    f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.baseline import install; install(); "
    "from bitrix_worker.cli import main; main()",
]
PY_SPY_RATE = 200


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def postgres_admin_url() -> str:
    return os.environ.get("BENCH_POSTGRES_URL") or os.environ.get(
        "BITRIX_WORKER_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"
    )


def previous_cli(src: Path) -> list[str]:
    """``python -c`` arguments that run the worker from ``src`` (an extracted tree), refusing to start if the
    installed package would be imported instead."""
    return [
        "-c",
        f"import sys; sys.path.insert(0, {str(src)!r}); import bitrix_worker; "
        f"assert bitrix_worker.__file__.startswith({str(src)!r}), bitrix_worker.__file__; "
        "from bitrix_worker.cli import main; main()",
    ]


def extract_previous(workdir: Path, commit: str) -> Path:
    """``src/`` as of ``commit``, extracted under ``workdir``; returns the directory to put on sys.path."""
    out = workdir / f"previous-{commit}"
    if not (out / "src" / "bitrix_worker").is_dir():
        tar = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "src"],
            capture_output=True,
            check=True,
        )
        with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                archive.extractall(out, filter="data")
            else:  # pragma: no cover - our own repository's archive
                archive.extractall(out)
    return out / "src"


def _spawn(workdir: Path, env: dict[str, str], name: str, args: list[str]) -> subprocess.Popen[bytes]:
    log = workdir / f"{name}.log"
    return subprocess.Popen(
        [sys.executable, *args, "run"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=workdir
    )


async def _done(ns: Namespace) -> int:
    """Operations the workers finished (applied + skipped + dead-lettered), from the counters hash.

    Counted by the worker, not the emulator: updates of one key that wait behind each other are coalesced
    into one command, so with hot keys the portal sees fewer commands than there were operations.
    """
    counters = await ns.counters()
    return sum(v for k, v in counters.items() if k.startswith("outcome:"))


async def _wait_first_applied(ns: Namespace, base: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if await _done(ns) > base:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the worker applied nothing (exit code {proc.poll()})")


def _proc_cpu(pid: int) -> float:
    return threads.process_cpu(pid)


def _cpu_of(pids: set[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # a backend that ended
            out[pid] = _proc_cpu(pid)
    return out


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _peak_rss(pid: int, stop: asyncio.Event, out: dict[str, int]) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError, ValueError):  # the process may be gone between two samples
            out["peak"] = max(out.get("peak", 0), _rss(pid))
        await asyncio.sleep(0.1)


class Backend:
    """Where the mapping store lives for one part of the run; PostgreSQL gets a database of its own."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self._db = f"bench_cost_{uuid.uuid4().hex[:10]}"
        if name == "sqlite":
            self.url = f"sqlite+aiosqlite:///{workdir / 'cost.sqlite3'}"
        else:
            base = postgres_admin_url().rsplit("/", 1)[0]
            self.url = f"{base}/{self._db}"

    async def create(self) -> None:
        if self.name == "postgresql":
            await self._admin(f'CREATE DATABASE "{self._db}"')

    async def drop(self) -> None:
        if self.name == "postgresql":
            with contextlib.suppress(Exception):
                await self._admin(f'DROP DATABASE IF EXISTS "{self._db}" WITH (FORCE)')

    async def analyze(self) -> None:
        """Give PostgreSQL's planner the statistics autovacuum would have gathered on a table in use: on a
        freshly seeded table without them it reads every row of the entity for each batch's lookup."""
        if self.name == "postgresql":
            import asyncpg

            conn = await asyncpg.connect(self.url)
            try:
                await conn.execute(f'ANALYZE "{DEFAULT_TABLE}"')
            finally:
                await conn.close()

    async def server_pids(self) -> set[int]:
        """PostgreSQL backends serving the worker's database (their CPU is the server's share)."""
        if self.name != "postgresql":
            return set()
        import asyncpg

        conn = await asyncpg.connect(postgres_admin_url())
        try:
            rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", self._db)
        finally:
            await conn.close()
        return {int(r["pid"]) for r in rows}

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(postgres_admin_url())
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


async def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why it is skipped."""
    try:
        import asyncpg

        conn = await asyncio.wait_for(asyncpg.connect(postgres_admin_url()), 5)
        await conn.close()
    except Exception as exc:
        return f"PostgreSQL at BENCH_POSTGRES_URL did not answer: {type(exc).__name__}"
    return None


class Run:
    """Everything one benchmark run shares: emulator, namespace, backlog."""

    def __init__(
        self,
        workdir: Path,
        emu: Emulator,
        ns: Namespace,
        deals: int,
        backlog: int,
        *,
        clis: dict[str, list[str]] | None = None,
    ) -> None:
        self.workdir, self.emu, self.ns, self.deals, self.backlog = workdir, emu, ns, deals, backlog
        self.clis = clis or {"baseline": BASELINE_CLI, "current": CLI}
        self.next_i = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    async def top_up(self) -> int:
        """Refill the stream to ``backlog`` entries; returns how many were waiting after."""
        missing = self.backlog - int(await self.ns.redis.xlen(self.ns.stream))
        if missing > 0:
            start = self.next_i
            self.next_i += missing
            await enqueue_payloads(
                self.ns.redis,
                self.ns.stream,
                (
                    update_payload(key_of(i % self.deals), {"STAGE_ID": "WON", "COMMENTS": f"v{i}"})
                    for i in range(start, self.next_i)
                ),
                chunk=5000,
            )
        return int(await self.ns.redis.xlen(self.ns.stream))

    def env(self, backend: Backend, consumer: str) -> dict[str, str]:
        # the portal has no limits here, so neither may the worker's own limiter
        return worker_env(
            webhook_url=self.emu.webhook_url,
            ns=self.ns,
            database_url=backend.url,
            consumer=consumer,
            rate_per_s=100_000,
            rate_burst=100_000,
        )

    async def window(self, backend: Backend, variant: str, seconds: float) -> dict[str, Any]:
        """One measured window of a fresh worker process."""
        waiting = await self.top_up()
        name = f"{backend.name}-{variant}-{len(self.procs)}"
        proc = _spawn(self.workdir, self.env(backend, name), name, self.clis[variant])
        self.procs.append(proc)
        stop, mem = asyncio.Event(), {"peak": 0}
        sampler = asyncio.create_task(_peak_rss(proc.pid, stop, mem))
        try:
            await _wait_first_applied(self.ns, await _done(self.ns), proc)
            pg0 = await backend.server_pids()
            srv0 = _cpu_of(pg0)
            emu0, cpu0, t0 = _proc_cpu(self.emu.proc.pid), threads.thread_cpu(proc.pid), time.monotonic()
            total0 = _proc_cpu(proc.pid)
            done0 = await _done(self.ns)
            await asyncio.sleep(seconds)
            done1 = await _done(self.ns)
            cpu1, emu1, t1 = threads.thread_cpu(proc.pid), _proc_cpu(self.emu.proc.pid), time.monotonic()
            cpu = _proc_cpu(proc.pid) - total0
            srv1 = _cpu_of(pg0 | await backend.server_pids())
            rss_end = _rss(proc.pid)
        finally:
            stop.set()
            await sampler
            stop_all([proc])
        ops, elapsed = done1 - done0, t1 - t0
        delta = threads.cpu_delta(cpu0, cpu1)
        server = sum(srv1[p] - srv0.get(p, 0.0) for p in srv1)
        return {
            "backend": backend.name,
            "variant": variant,
            "waiting_at_start": waiting,
            "window_s": round(elapsed, 2),
            "updates": ops,
            "updates_per_s": round(ops / elapsed, 1),
            "cpu_s": round(cpu, 2),
            "cpu_pct_of_one_core": round(100 * cpu / elapsed, 1),
            "updates_per_cpu_s": round(ops / cpu) if cpu else None,
            "cpu_s_per_1000": round(1000 * cpu / ops, 3) if ops else None,
            **threads.split_main(proc.pid, delta, cpu),
            "emulator_cpu_s_per_1000": round(1000 * (emu1 - emu0) / ops, 3) if ops else None,
            "database_server_cpu_s_per_1000": round(1000 * server / ops, 3) if ops and srv1 else None,
            "peak_rss_mb": round(mem["peak"] / 2**20, 1),
            "rss_at_end_mb": round(rss_end / 2**20, 1),
        }

    async def profile(self, backend: Backend, variant: str, seconds: float, spy: str) -> dict[str, Any]:
        """py-spy (GIL holders only, per thread) and /proc CPU per thread over the same seconds."""
        await self.top_up()
        name = f"{backend.name}-{variant}-profiled"
        proc = _spawn(self.workdir, self.env(backend, name), name, self.clis[variant])
        self.procs.append(proc)
        raw = self.workdir / f"{name}.txt"
        try:
            await _wait_first_applied(self.ns, await _done(self.ns), proc)
            cpu0 = threads.thread_cpu(proc.pid)
            spy_proc = await asyncio.create_subprocess_exec(
                *(spy, "record", "--pid", str(proc.pid), "--duration", str(int(seconds))),
                *("--rate", str(PY_SPY_RATE), "--format", "raw", "--output", str(raw)),
                *("--gil", "--threads", "--nonblocking"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _, err = await spy_proc.communicate()
            cpu1 = threads.thread_cpu(proc.pid)
        finally:
            stop_all([proc])
        if not raw.exists():
            return {"skipped": f"py-spy failed: {err.decode()[-300:]}"}
        folded = threads.fold_threads(raw.read_text())
        result = threads.attribute(proc.pid, threads.cpu_delta(cpu0, cpu1), folded)
        result["seconds"] = seconds
        return result


def _ratio(mine: list[dict[str, Any]], against: str) -> dict[str, float] | None:
    """current / ``against`` in updates per CPU-second, paired round by round; median and spread."""
    pairs = zip(
        [r for r in mine if r["variant"] == "current"],
        [r for r in mine if r["variant"] == against],
        strict=False,
    )
    ratios = [c["updates_per_cpu_s"] / b["updates_per_cpu_s"] for c, b in pairs]
    if not ratios:
        return None
    return {
        "median": round(statistics.median(ratios), 2),
        "min": round(min(ratios), 2),
        "max": round(max(ratios), 2),
    }


def rounds_order(variants: tuple[str, ...], rnd: int) -> tuple[str, ...]:
    """The order of round ``rnd``: rotated by one each round, so each variant leads once per cycle."""
    k = rnd % len(variants)
    return variants[k:] + variants[:k]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread per backend and variant, and current / baseline (``speedup``) and current /
    previous (``speedup_vs_previous``) per round (paired windows)."""
    out: dict[str, Any] = {}
    for backend in dict.fromkeys(r["backend"] for r in runs):
        mine = [r for r in runs if r["backend"] == backend and r["updates"]]
        per: dict[str, Any] = {}
        for variant in VARIANTS:
            rows = [r for r in mine if r["variant"] == variant]
            if not rows:
                continue
            per[variant] = {
                key: {
                    "median": statistics.median(r[key] for r in rows),
                    "min": min(r[key] for r in rows),
                    "max": max(r[key] for r in rows),
                }
                for key in ("updates_per_cpu_s", "updates_per_s", "cpu_s_per_1000", "peak_rss_mb")
            }
        for key, against in (("speedup", "baseline"), ("speedup_vs_previous", "previous")):
            ratio = _ratio(mine, against)
            if ratio is not None:
                per[key] = ratio
        out[backend] = per
    return out


async def main(
    workdir: Path,
    *,
    deals: int,
    backlog: int,
    window_s: float,
    profile_s: float,
    repeats: int = 3,
    backends: tuple[str, ...] = ("sqlite", "postgresql"),
    variants: tuple[str, ...] = ("baseline", "current"),
    previous_commit: str = PREVIOUS_COMMIT,
) -> dict[str, Any]:
    ensure_dir(workdir)
    variants = tuple(v for v in VARIANTS if v in variants)
    clis = {"baseline": BASELINE_CLI, "current": CLI}
    if "previous" in variants:
        clis["previous"] = previous_cli(extract_previous(workdir, previous_commit))
    emu = await Emulator.start(workdir, no_limits=True)
    client = aioredis.Redis.from_url(redis_url())
    run = Run(workdir, emu, Namespace(client), deals, backlog, clis=clis)
    result: dict[str, Any] = {"deals": deals, "backlog": backlog, "repeats": repeats}
    result |= {"variants": list(variants)}
    result["previous_commit"] = previous_commit if "previous" in variants else None
    result |= {"runs": [], "profiles": {}}
    skipped = await postgres_available() if "postgresql" in backends else None
    if skipped:
        result["skipped"] = {"postgresql": skipped}
        backends = tuple(b for b in backends if b != "postgresql")
    try:
        ids = await precreate_deals(emu.webhook_url, deals)
        t = time.monotonic()
        await run.top_up()
        result["enqueue_updates_per_s"] = round(backlog / (time.monotonic() - t))
        result["stream_memory_mb"] = round((await client.memory_usage(run.ns.stream) or 0) / 2**20, 1)
        spy = py_spy()
        for name in backends:
            backend = Backend(name, workdir)
            await backend.create()
            try:
                await seed_mapping(backend.url, ids)
                await backend.analyze()
                for rnd in range(repeats):
                    for variant in rounds_order(variants, rnd):
                        result["runs"].append(await run.window(backend, variant, window_s))
                if profile_s > 0 and spy is not None:
                    result["profiles"][name] = {
                        v: await run.profile(backend, v, profile_s, spy) for v in variants
                    }
            finally:
                await backend.drop()
        if spy is None:
            result["profiles"] = {"skipped": "py-spy is not installed (pip install '.[bench]')"}
        result["summary"] = summarise(result["runs"])
        result["left_in_stream"] = int(await client.xlen(run.ns.stream))
        return result
    finally:
        stop_all(run.procs)
        await run.ns.cleanup()
        await client.aclose()
        emu.stop()
