"""Run every benchmark, write ``bench/results/<mode>-<time>.json``, regenerate docs/benchmarks.md's figures.

    python -m bench.run_all            # the full run (~22 min on a 2-core machine, orders included)
    python -m bench.run_all --quick    # small counts (~5 min); writes the JSON, leaves the docs alone
    python -m bench.run_all --only throughput,cost --docs

The rate_safety sweep is separate (``python -m bench.sweep``, ~4 min per value set); its saved results
(bench/results/sweep-*.json) are shown in the regenerated figures too.

Needs Redis at REDIS_URL (DB 12 is used, keys under a unique ``bench:<id>`` prefix, deleted afterwards) and
the ``bench`` extra (fast-bitrix24, psutil, py-spy). Peers are measured in the same run as our worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import cost, faults, orders, peers, throughput
from .common import RESULTS_DIR
from .report import DOC, render, write_doc

FULL = {
    "throughput": {"n": 20_000, "processes": [1, 4]},
    "peers": {"n": 20_000, "window_s": 60.0},
    "faults": {"n": 10_000, "naive_window_s": 60.0},
    "cost": {"deals": 20_000, "backlog": 1_000_000, "window_s": 15.0, "profile_s": 10.0},
    "orders": {"n": 3_000, "naive_window_s": 60.0, "offered_per_s": 40.0},
}
QUICK = {
    "throughput": {"n": 4_000, "processes": [1, 4]},
    "peers": {"n": 4_000, "window_s": 15.0},
    "faults": {"n": 2_000, "naive_window_s": 15.0},
    "cost": {"deals": 2_000, "backlog": 100_000, "window_s": 5.0, "profile_s": 4.0},
    "orders": {"n": 1_000, "naive_window_s": 15.0, "offered_per_s": 40.0},
}
NAMES = ("throughput", "peers", "faults", "cost", "orders")


def machine() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    for pkg in ("fast_bitrix24", "b24pysdk", "redis", "httpx"):
        try:
            from importlib.metadata import version

            info[pkg] = version(pkg.replace("_", "-"))
        except Exception:
            info[pkg] = None
    return info


async def run(names: list[str], cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name in names:
        started = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        c = cfg[name]
        sub = workdir / name
        if name == "throughput":
            results[name] = await throughput.main(sub, n=c["n"], processes=c["processes"])
        elif name == "peers":
            results[name] = await peers.main(sub, n=c["n"], window_s=c["window_s"])
        elif name == "faults":
            results[name] = await faults.main(sub, n=c["n"], naive_window_s=c["naive_window_s"])
        elif name == "cost":
            results[name] = await cost.main(
                sub, deals=c["deals"], backlog=c["backlog"], window_s=c["window_s"], profile_s=c["profile_s"]
            )
        elif name == "orders":
            results[name] = await orders.main(
                sub, n=c["n"], naive_window_s=c["naive_window_s"], offered_per_s=c["offered_per_s"]
            )
        timings[name] = round(time.monotonic() - started, 1)
        print(f"[bench] {name} done in {timings[name]} s", file=sys.stderr, flush=True)
    results["timings_s"] = timings
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts; docs untouched unless --docs")
    parser.add_argument("--only", default=",".join(NAMES), help=f"comma list of {', '.join(NAMES)}")
    parser.add_argument("--docs", action="store_true", help="regenerate docs/benchmarks.md even with --quick")
    parser.add_argument("--no-docs", action="store_true", help="never touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(NAMES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    mode = "quick" if args.quick else "full"
    cfg = QUICK if args.quick else FULL
    command = "python -m bench.run_all" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bitrix-bench-") as tmp:
        results = asyncio.run(run(names, cfg, Path(tmp)))
    record = {
        "mode": mode,
        "command": command,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "config": {k: v for k, v in cfg.items() if k in names},
        "results": results,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    path = RESULTS_DIR / f"{mode}-{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"[bench] results: {path.relative_to(RESULTS_DIR.parent.parent)}", file=sys.stderr)
    if not args.no_docs and (mode == "full" or args.docs):
        write_doc(render(record, path))
        print(f"[bench] figures regenerated in {DOC.relative_to(RESULTS_DIR.parent.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
