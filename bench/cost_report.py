"""Run benchmark 4 on its own and render it: ``python -m bench.cost_report [--quick] [--no-docs]``.

The full run (~10 min on a 2-core machine) writes ``bench/results/cost-<time>.json`` and regenerates the
figures of docs/benchmarks.md: section 4 from this file, every other section from the newest full run of
``bench.run_all``, which is left as it was. ``--quick`` writes the JSON only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import RESULTS_DIR

VARIANTS = ("baseline", "previous", "current")
FULL = {"deals": 20_000, "backlog": 1_000_000, "window_s": 15.0, "profile_s": 10.0, "repeats": 3}
QUICK = {"deals": 2_000, "backlog": 100_000, "window_s": 5.0, "profile_s": 4.0, "repeats": 2}
TARGETS = {"sqlite": 6_000, "postgresql": 5_000}
STORE_TARGET_PCT = 20.0
RSS_TARGET_MB = 100.0
LABEL = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _n(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and abs(v) < 10:
        return f"{v:.3f}".rstrip("0").rstrip(".") if v else "0"
    return f"{round(v):,}"


def _spread(s: dict[str, Any], bold: bool = False) -> str:
    mid = f"**{_n(s['median'])}**" if bold else _n(s["median"])
    return f"{mid} ({_n(s['min'])}–{_n(s['max'])})"


def _what(variant: str, c: dict[str, Any]) -> str:
    if variant == "baseline":
        return "before (37ab23b)"
    if variant == "previous":
        return f"previous ({c.get('previous_commit') or '?'})"
    return "current"


def _ratio_cell(per: dict[str, Any], key: str, variant: str) -> str:
    speedup = per.get(key) if variant == "current" else None
    return _spread(speedup, bold=True) + "x" if speedup else ""


def _runs_table(c: dict[str, Any]) -> list[str]:
    ratios = [
        (key, title)
        for key, title in (("speedup", "current ÷ baseline"), ("speedup_vs_previous", "current ÷ previous"))
        if any(key in per for per in c["summary"].values())
    ]
    out = [
        "| store | code | updates per CPU-second | CPU s / 1,000 updates | updates/s on this machine "
        "| peak RSS |" + "".join(f" {title} |" for _, title in ratios),
        "|---|---|---|---|---|---|" + "---|" * len(ratios),
    ]
    for backend, per in c["summary"].items():
        for variant in VARIANTS:
            if variant not in per:
                continue
            s = per[variant]
            out.append(
                f"| {LABEL.get(backend, backend)} | {_what(variant, c)} | "
                f"{_spread(s['updates_per_cpu_s'], bold=True)} | "
                f"{_spread(s['cpu_s_per_1000'])} | {_spread(s['updates_per_s'])} | "
                f"{_n(s['peak_rss_mb']['max'])} MB |"
                + "".join(f" {_ratio_cell(per, key, variant)} |" for key, _ in ratios)
            )
    return out


def _threads_table(c: dict[str, Any]) -> list[str]:
    out = [
        "| store | code | CPU s / 1,000 updates: loop thread | other threads | database server |",
        "|---|---|---|---|---|",
    ]
    for backend in c["summary"]:
        for variant in VARIANTS:
            rows = [r for r in c["runs"] if (r["backend"], r["variant"]) == (backend, variant)]
            rows = [r for r in rows if r["updates"]]
            if not rows:
                continue

            def per_1000(key: str, rows: list[dict[str, Any]] = rows) -> str:
                vals = [1000 * r[key] / r["updates"] for r in rows]
                return _n(sorted(vals)[len(vals) // 2])

            server = [r["database_server_cpu_s_per_1000"] for r in rows]
            srv = _n(sorted(server)[len(server) // 2]) if None not in server else "(in the worker)"
            out.append(
                f"| {LABEL.get(backend, backend)} | {variant} | {per_1000('main_thread_s')} | "
                f"{per_1000('other_threads_s')} | {srv} |"
            )
    return out


def _profile_table(profiles: dict[str, Any]) -> list[str]:
    cols = [(b, v) for b, per in profiles.items() if isinstance(per, dict) for v in per if "cpu_s" in per[v]]
    if not cols:
        return []
    areas: dict[str, None] = {}
    for b, v in cols:
        for area, _ in profiles[b][v].get("by_area_pct", []):
            areas.setdefault(area)
    head = " | ".join(f"{LABEL.get(b, b)} {v}" for b, v in cols)
    out = [f"| share of the worker's CPU | {head} |", "|---|" + "---|" * len(cols)]
    for area in areas:
        cells = [dict(profiles[b][v].get("by_area_pct", [])).get(area) for b, v in cols]
        name = f"**{area}**" if area == "mapping store" else area
        out.append(f"| {name} | " + " | ".join("" if x is None else f"{x}%" for x in cells) + " |")
    threads = " | ".join(
        ", ".join(f"{t['thread']} {t['cpu_s']} s" for t in profiles[b][v]["threads"][:3]) for b, v in cols
    )
    out.append(f"| CPU by thread (/proc) | {threads} |")
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _targets(c: dict[str, Any]) -> str:
    parts = []
    for backend, target in TARGETS.items():
        per = c["summary"].get(backend, {})
        cur = per.get("current")
        if cur:
            got = cur["updates_per_cpu_s"]["median"]
            part = f"{LABEL[backend]} ≥ {target:,}/CPU-s: {_n(got)} ({_met(got >= target)})"
            if "previous" in per:  # how loaded the machine was: the same yardstick run in the same windows
                part += f", previous code {_n(per['previous']['updates_per_cpu_s']['median'])} in this run"
            parts.append(part)
    stores = [
        p["current"]["store_pct"]
        for p in c.get("profiles", {}).values()
        if isinstance(p, dict) and "store_pct" in p.get("current", {})
    ]
    if stores:
        worst = max(stores)
        parts.append(f"store < {STORE_TARGET_PCT:.0f}% of CPU: {worst}% ({_met(worst < STORE_TARGET_PCT)})")
    peak = max((r["peak_rss_mb"] for r in c["runs"] if r["variant"] == "current"), default=None)
    if peak is not None:
        parts.append(f"RSS ≤ {RSS_TARGET_MB:.0f} MB: {peak} MB ({_met(peak <= RSS_TARGET_MB)})")
    return "Targets of issue 14, current code: " + "; ".join(parts) + "."


def render_cost(c: dict[str, Any], header: str = "") -> list[str]:
    """Section 4 of the figures for a result of ``bench.cost.main``."""
    waiting = min((r["waiting_at_start"] for r in c["runs"]), default=0)
    out = ["### 4. Worker cost (one process, emulator with no limits and no latency)", ""]
    if header:
        out += [header, ""]
    names = ", ".join(_what(v, c) for v in c.get("variants", ("baseline", "current")))
    out += [
        f"Variants side by side in one run ({names}): {c['repeats']} rounds of one "
        f"{_n(c['runs'][0]['window_s'] if c['runs'] else 0)} s window each, rotating which goes first; "
        f"median (min–max). At least {_n(waiting)} updates were waiting at the start of every window "
        f"(stream {_n(c.get('stream_memory_mb'))} MB in Redis). *Updates per CPU-second* is what one "
        "process does with a core to itself; *updates/s on this machine* is what it did while sharing two "
        "cores with the emulator, Redis, the database and other people's tests.",
        "",
        *_runs_table(c),
        "",
        _targets(c),
        "",
        *_threads_table(c),
    ]
    if c.get("skipped"):
        out += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in c["skipped"].items()) + "."]
    prof = _profile_table(c.get("profiles", {}))
    if prof:
        out += [
            "",
            "Where the CPU goes: each thread's CPU seconds from `/proc`, divided between areas by its "
            "`py-spy record --gil --threads` samples (only the thread holding the GIL is sampled, so threads "
            "waiting for it are not counted as busy); an area is the library nearest the leaf of a stack, "
            "the store being SQLAlchemy, the database driver and `bitrix_worker/mapping*`. One profiled "
            "window per column.",
            "",
            *prof,
        ]
    return out


def newest(results_dir: Path, since: str = "") -> dict[str, Any] | None:
    """The newest standalone cost record (bench/results/cost-*.json) started after ``since``, if any."""
    found = sorted(results_dir.glob("cost-*.json"))
    if not found:
        return None
    record: dict[str, Any] = json.loads(found[-1].read_text())
    return record if record.get("started_at", "") > since else None


def header(record: dict[str, Any]) -> str:
    m = record.get("machine", {})
    return (
        f"Run: `{record['command']}`, started {record['started_at']}, took {_n(record['duration_s'])} s, on "
        f"this machine ({m.get('cpus')} CPUs shared with other users, Python {m.get('python')}); raw figures "
        f"in `bench/results/{record['file']}`."
    )


def cli(argv: list[str] | None = None) -> int:
    from . import cost
    from .report import DOC, render, write_doc
    from .run_all import machine

    parser = argparse.ArgumentParser(prog="python -m bench.cost_report", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts; docs untouched")
    parser.add_argument("--no-docs", action="store_true", help="never touch docs/benchmarks.md")
    parser.add_argument(
        "--previous", default=cost.PREVIOUS_COMMIT, help="commit the 'previous' variant runs (%(default)s)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list of %(default)s")
    args = parser.parse_args(argv)
    cfg: dict[str, Any] = dict(QUICK if args.quick else FULL)
    cfg["variants"] = tuple(v for v in args.variants.split(",") if v)
    cfg["previous_commit"] = args.previous
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bitrix-cost-") as tmp:
        result = asyncio.run(cost.main(Path(tmp), **cfg))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    record: dict[str, Any] = {
        "command": "python -m bench.cost_report" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
        "mode": "quick" if args.quick else "full",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "config": cfg,
        "file": f"cost-{stamp}.json" if not args.quick else f"quick-cost-{stamp}.json",
        "cost": result,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / record["file"]
    path.write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(render_cost(result, header(record))))
    print(f"[bench] results: {path}", file=sys.stderr)
    fulls = sorted(RESULTS_DIR.glob("full-*.json"))
    if not args.quick and not args.no_docs and fulls:
        write_doc(render(json.loads(fulls[-1].read_text()), fulls[-1]))
        print(f"[bench] figures regenerated in {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
