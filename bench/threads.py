"""CPU by thread: /proc for the seconds each thread ran, py-spy (GIL holders only) for what they ran.

Why: a sampling profiler that samples every non-idle thread counts a thread that is waiting for the GIL as
busy. The worker has a loop thread and, on SQLite, one database thread per pooled connection; sampling them
all put ~60% of the samples in the mapping store when it was ~50% of the CPU. Here each thread's CPU time
comes from the kernel (``/proc/<pid>/task/<tid>/stat``) and is divided between areas in proportion to that
thread's py-spy samples taken while it *held the GIL* (``py-spy record --gil --threads``). A thread's C work
with the GIL released (SQLite executing a statement) is charged like its Python samples: for a database
thread that is all the store's.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

STORE = "mapping store"
LIBRARIES = (
    (STORE, ("bitrix_worker/mapping", "sqlalchemy/", "aiosqlite/", "sqlite3", "asyncpg/", "greenlet")),
    ("json", ("json/", "json.decoder", "json.encoder", "orjson")),
    ("redis client", ("redis/",)),
    ("HTTP client (httpx/httpcore/h11)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("logging (structlog/logging)", ("structlog/", "logging/")),
    ("pydantic", ("pydantic/", "pydantic_core")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
)
LOOP = ("asyncio/", "selectors.py")

_THREAD = re.compile(r"^thread \((?:0x)?([0-9A-Fa-f]+)\)(?::\s*(.*))?$")
_LINE = re.compile(r":\d+\)$")


def process_cpu(pid: int) -> float:
    """CPU seconds of the whole process, threads that already ended included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every live thread of ``pid``, by native thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # the thread ended between listing and reading
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    """CPU each thread spent between two ``thread_cpu`` snapshots (threads born in between count fully)."""
    return {tid: round(t - before.get(tid, 0.0), 3) for tid, t in after.items() if t - before.get(tid, 0.0)}


def split_main(pid: int, delta: dict[int, float], total: float) -> dict[str, float]:
    """The loop thread (its tid is the pid) against every other thread, in CPU seconds."""
    main = delta.get(pid, 0.0)
    return {"main_thread_s": round(main, 3), "other_threads_s": round(max(0.0, total - main), 3)}


def area_of_stack(frames: list[str]) -> str:
    """The library nearest the leaf (its work, even when it runs inside asyncio's transports); else the event
    loop when the leaf is asyncio's own; else our code; else other."""
    for frame in reversed(frames):
        for name, needles in LIBRARIES:
            if any(n in frame for n in needles):
                return name
    if frames and any(n in frames[-1] for n in LOOP):
        return "asyncio event loop"
    if any("bitrix_worker/" in f for f in frames):
        return "bitrix_worker (the rest)"
    return "other"


def fold_threads(text: str) -> dict[int, dict[str, Any]]:
    """py-spy ``--threads --format raw`` stacks -> per native thread id: name, samples, samples by area."""
    threads: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"name": "", "samples": 0, "areas": Counter(), "leaf": Counter(), "ours": Counter()}
    )
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, _, rest = stack.partition(";")
        match = _THREAD.match(head.strip())
        if match is None:
            continue
        raw_id = match[1]
        tid = int(raw_id, 16) if head.strip().startswith("thread (0x") else int(raw_id)
        frames = [_LINE.sub(")", f.strip()) for f in rest.split(";") if f.strip()]
        t = threads[tid]
        t["name"] = t["name"] or (match[2] or "").strip()
        t["samples"] += int(count)
        t["areas"][area_of_stack(frames)] += int(count)
        if frames:
            t["leaf"][frames[-1]] += int(count)
        for f in set(frames):
            if "bitrix_worker/" in f:
                t["ours"][f] += int(count)
    return dict(threads)


def attribute(pid: int, delta: dict[int, float], folded: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Each thread's CPU divided between areas by its GIL-holding samples; totals and the store's share."""
    by_area: Counter[str] = Counter()
    rows = []
    for tid, cpu in sorted(delta.items(), key=lambda kv: -kv[1]):
        t = folded.get(tid)
        name = "main (event loop)" if tid == pid else (t["name"] if t and t["name"] else "unnamed")
        if t and t["samples"]:
            for area, n in t["areas"].items():
                by_area[area] += cpu * n / t["samples"]
            top = t["areas"].most_common(1)[0][0]
        else:
            by_area["not sampled (no Python frames)"] += cpu
            top = "-"
        rows.append({"thread": name, "cpu_s": round(cpu, 3), "samples": t["samples"] if t else 0, "top": top})
    total = sum(delta.values())
    if not total:
        return {"cpu_s": 0.0}
    main = folded.get(pid, {"samples": 0})

    def top(kind: str, n: int = 12) -> list[tuple[str, float]]:
        if not main["samples"]:
            return []
        return [(f, round(100 * c / main["samples"], 1)) for f, c in main[kind].most_common(n)]

    return {
        "main_thread_top_self_pct": top("leaf"),
        "main_thread_top_ours_inclusive_pct": top("ours", 20),
        "cpu_s": round(total, 3),
        "threads": rows,
        "by_area_pct": [(a, round(100 * s / total, 1)) for a, s in by_area.most_common()],
        "store_pct": round(100 * by_area.get(STORE, 0.0) / total, 1),
    }
