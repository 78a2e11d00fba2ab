"""Benchmark 4: what one worker process costs, against an emulator with no limits and no latency.

1. A deep backlog: ``backlog`` updates (1,000,000 in the full run) are XADDed in pipelines before the worker
   starts; they cycle over ``deals`` pre-created deals, so every one is a real ``crm.deal.update``.
2. One worker process (``bitrix-worker run``) consumes for ``window_s`` seconds; the emulator counts what
   it applied. psutil samples the worker's CPU time and RSS every 0.1 s (the window starts at the first
   applied update, so start-up imports are not charged to the operations), and the peak RSS with the whole
   backlog waiting shows that the worker reads ``batch_size`` entries per claim, not the stream.
3. A second worker is profiled with ``py-spy record --format raw`` for ``profile_s`` seconds while it works
   through the same backlog; the samples are folded into self/inclusive time per function and per area.
The rest of the backlog is deleted with the namespace afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .common import (
    Admin,
    Emulator,
    Namespace,
    enqueue_payloads,
    ensure_dir,
    key_of,
    ok_calls,
    precreate_deals,
    redis_url,
    seed_mapping,
    spawn_worker,
    stop_all,
    update_payload,
    worker_env,
)

AREAS = (
    ("json", ("json/", "json.decoder", "json.encoder", "cjson", "orjson")),
    ("redis client", ("redis/",)),
    ("mapping store (SQLAlchemy/aiosqlite)", ("sqlalchemy/", "aiosqlite/", "sqlite3")),
    ("HTTP client (httpx/httpcore/h11)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("logging (structlog/logging)", ("structlog/", "logging/")),
    ("pydantic", ("pydantic/", "pydantic_core")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("bitrix_worker", ("bitrix_worker/",)),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
)


_LINE = re.compile(r":\d+\)$")  # "fn (file.py:123)" -> "fn (file.py)": one entry per function


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def _area(frame: str) -> str:
    for name, needles in AREAS:
        if any(n in frame for n in needles):
            return name
    return "other"


def fold_raw(text: str, top: int = 15) -> dict[str, Any]:
    """Summarise py-spy's raw (collapsed) stacks: self and inclusive shares per function and per area."""
    total = 0
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_area: Counter[str] = Counter()
    incl_area: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_LINE.sub(")", f.strip()) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        self_fn[leaf] += n
        # the leaf's area, but idle time in the selector is the loop waiting, not work
        self_area["idle (waiting in select)" if "select (selectors.py" in leaf else _area(leaf)] += n
        for f in set(frames):
            incl_fn[f] += n
        for a in {_area(f) for f in frames}:
            incl_area[a] += n
    if not total:
        return {"samples": 0}

    def pct(c: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, round(100 * v / total, 1)) for name, v in c.most_common(k)]

    return {
        "samples": total,
        "self_by_area_pct": pct(self_area, 12),
        "inclusive_by_area_pct": pct(incl_area, 12),
        "top_self_pct": pct(self_fn, top),
        "top_inclusive_bitrix_worker_pct": [(f, p) for f, p in pct(incl_fn, 200) if "bitrix_worker/" in f][
            :top
        ],
    }


class Proc:
    """CPU seconds and RSS of a process: psutil when installed (the bench extra), else Linux /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            import psutil

            self._ps: Any = psutil.Process(pid)
        except ImportError:
            self._ps = None

    def cpu_s(self) -> float:
        if self._ps is not None:
            t = self._ps.cpu_times()
            return float(t.user + t.system)
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        if self._ps is not None:
            return int(self._ps.memory_info().rss)
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


async def _sample(proc: Proc, stop: asyncio.Event, out: dict[str, Any]) -> None:
    peak = 0
    while not stop.is_set():
        with contextlib.suppress(Exception):  # the process may be gone between two samples
            peak = max(peak, proc.rss())
        out["peak_rss"] = peak
        await asyncio.sleep(0.1)


async def _done(ns: Namespace) -> int:
    """Operations the workers finished (applied + skipped + dead-lettered), from the counters hash.

    Counted by the worker, not the emulator: updates of one key that wait behind each other are coalesced
    into one command, so with hot keys the portal sees fewer commands than there were operations.
    """
    counters = await ns.counters()
    return sum(v for k, v in counters.items() if k.startswith("outcome:"))


async def _wait_first_applied(ns: Namespace, base: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await _done(ns) > base:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the worker applied nothing")


async def main(
    workdir: Path,
    *,
    deals: int,
    backlog: int,
    window_s: float,
    profile_s: float,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ensure_dir(workdir)
    emu = await Emulator.start(workdir, no_limits=True)
    admin = Admin(emu.base_url)
    client = aioredis.Redis.from_url(redis_url())
    ns = Namespace(client)
    database_url = f"sqlite+aiosqlite:///{workdir / 'cost.sqlite3'}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ids = await precreate_deals(emu.webhook_url, deals)
        await seed_mapping(database_url, ids)
        t = time.monotonic()
        await enqueue_payloads(
            client,
            ns.stream,
            (
                update_payload(key_of(i % deals), {"STAGE_ID": "WON", "COMMENTS": f"v{i}"})
                for i in range(backlog)
            ),
            chunk=5000,
        )
        enqueue_s = time.monotonic() - t
        stream_mem = await client.memory_usage(ns.stream)
        # the portal has no limits here, so neither may the worker's own limiter
        unlimited = {"rate_per_s": 100_000, "rate_burst": 100_000, **(settings or {})}
        env = worker_env(
            webhook_url=emu.webhook_url, ns=ns, database_url=database_url, consumer="cost", **unlimited
        )
        # ---- measured run
        base = await _done(ns)
        commands0 = ok_calls(await admin.stats(), "crm.deal.update")
        emu_ps = Proc(emu.proc.pid)
        worker = spawn_worker(workdir, env, "cost-worker", until_idle=False)
        procs.append(worker)
        ps = Proc(worker.pid)
        stop = asyncio.Event()
        mem: dict[str, Any] = {}
        sampler = asyncio.create_task(_sample(ps, stop, mem))
        await _wait_first_applied(ns, base)
        cpu0, emu_cpu0, t0 = ps.cpu_s(), emu_ps.cpu_s(), time.monotonic()
        applied0 = await _done(ns)
        await asyncio.sleep(window_s)
        applied1 = await _done(ns)
        commands = ok_calls(await admin.stats(), "crm.deal.update") - commands0
        cpu1, emu_cpu1, t1 = ps.cpu_s(), emu_ps.cpu_s(), time.monotonic()
        rss_now = ps.rss()
        stop.set()
        await sampler
        stop_all([worker])
        ops = applied1 - applied0
        elapsed = t1 - t0
        result: dict[str, Any] = {
            "backlog": backlog,
            "deals": deals,
            "enqueue_s": round(enqueue_s, 1),
            "enqueue_ops_per_s": round(backlog / enqueue_s),
            "stream_memory_mb": round((stream_mem or 0) / 2**20, 1),
            "window_s": round(elapsed, 2),
            "applied_in_window": ops,
            "update_commands_run_by_portal": commands,
            "ops_per_s": round(ops / elapsed, 1),
            "worker_cpu_s": round(cpu1 - cpu0, 2),
            "worker_cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 1),
            "cpu_s_per_1000_ops": round(1000 * (cpu1 - cpu0) / ops, 3) if ops else None,
            "emulator_cpu_s_per_1000_ops": round(1000 * (emu_cpu1 - emu_cpu0) / ops, 3) if ops else None,
            "peak_rss_mb": round(mem.get("peak_rss", 0) / 2**20, 1),
            "rss_at_end_mb": round(rss_now / 2**20, 1),
            "left_in_stream": int(await client.xlen(ns.stream)),
        }
        # ---- profiled run (separate, so the profiler does not distort the figures above)
        spy = py_spy()
        if spy is None:
            result["profile"] = {"skipped": "py-spy is not installed (pip install '.[bench]')"}
        elif profile_s > 0:
            worker = spawn_worker(workdir, env, "cost-profiled", until_idle=False)
            procs.append(worker)
            await _wait_first_applied(ns, await _done(ns))
            raw = workdir / "profile.txt"
            spy_proc = await asyncio.create_subprocess_exec(
                spy,
                "record",
                "--pid",
                str(worker.pid),
                "--duration",
                str(int(profile_s)),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _, err = await spy_proc.communicate()
            stop_all([worker])
            if raw.exists():
                result["profile"] = fold_raw(raw.read_text())
                result["profile"]["seconds"] = profile_s
                result["profile"]["tool"] = "py-spy record --format raw --rate 200 --nonblocking"
            else:
                result["profile"] = {"skipped": f"py-spy failed: {err.decode()[-300:]}"}
        return result
    finally:
        stop_all(procs)
        await ns.cleanup()
        await client.aclose()
        await admin.aclose()
        emu.stop()


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(
            json.dumps(
                asyncio.run(main(Path(tmp), deals=2000, backlog=100_000, window_s=10, profile_s=8)), indent=2
            )
        )
