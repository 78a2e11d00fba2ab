"""The long-outage benchmark's figures, computed from what it recorded (no I/O but reading the logs).

What the portal received while it was down and in which probe interval, the gate's rhythm from the worker's
JSON log, the drain after the reopen, the targets, and the tables printed and written into the docs.
"""

from __future__ import annotations

import itertools
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from .common import _time_at
from .throughput import BURST_OPS, PORTAL_LIMIT_OPS_PER_S

IN_FLIGHT_GRACE_S = 1.0
BUCKET_FULL = 40  # of the portal's 50 requests: the worker allows itself 98% of it (rate_safety), less lag
PLATEAU_SLACK = 1.5


def gate_events(logs: list[Path], wall0: float) -> list[tuple[float, str]]:
    """(seconds since the start, pause|probe_failed|reopened) from the workers' JSON logs, in time order."""
    names = {
        "portal paused: ": "pause",
        "portal probe failed": "probe_failed",
        "portal probe succeeded": "reopened",
    }
    out: list[tuple[float, str]] = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            event = str(rec.get("event", ""))
            for prefix, name in names.items():
                if event.startswith(prefix) and "timestamp" in rec:
                    at = datetime.fromisoformat(str(rec["timestamp"]).replace("Z", "+00:00")).timestamp()
                    out.append((round(at - wall0, 3), name))
    return sorted(out)


def per_interval(times: list[float], marks: list[float]) -> list[int]:
    """Requests that reached the portal in each interval [marks[k], marks[k+1])."""
    return [sum(1 for t in times if a <= t < b) for a, b in itertools.pairwise(marks)]


def drain(
    samples: list[tuple[float, int, int, int]], reopen_s: float, base: int, total: int
) -> dict[str, Any]:
    """The drain after the reopen: the fresh burst, then the steady rate, then the time to empty.

    The steady window starts once the worker is held by the portal's limit rather than by its own speed:
    when the requests sent since the reopen, less the 2 per second the bucket drains, reach their plateau
    (the bucket's fresh burst used up, less the margin the worker keeps: within ``PLATEAU_SLACK`` of the
    highest value), and not before ``BURST_OPS`` + 250 updates were applied; it ends 150 updates before the
    backlog is empty (the tail of partial batches). A plateau under ``BUCKET_FULL`` means the worker never
    caught up with the bucket (it was slower than the portal allows), and no steady rate is claimed.
    """
    at_reopen = max((a for t, a, _, _ in samples if t <= reopen_s), default=base) - base
    backlog = total - at_reopen
    before = [r for t, _, r, _ in samples if t <= reopen_s]
    rel = [(t - reopen_s, a - base - at_reopen, r, q) for t, a, r, q in samples if t >= reopen_s]
    out: dict[str, Any] = {"backlog_at_reopen": backlog}
    if not rel or backlog <= 0:
        return out
    out["time_to_empty_s"] = round(_time_at(rel, backlog), 2)
    out["ideal_time_to_empty_s"] = round(max(0, backlog - BURST_OPS) / PORTAL_LIMIT_OPS_PER_S, 2)
    r0, head, end_n = (before[-1] if before else rel[0][2]), BURST_OPS + 250, backlog - 150
    excess = [((r - r0) - 2.0 * t, t, a) for t, a, r, _ in rel if a <= end_n]
    plateau = max((e for e, _, _ in excess), default=0.0)
    out["bucket_plateau_requests"] = round(plateau, 1)
    held = [(t, a) for e, t, a in excess if e >= plateau - PLATEAU_SLACK and a >= head]
    if plateau < BUCKET_FULL or not held or end_n - held[0][1] < 200:
        out["steady_note"] = "the worker never caught up with the portal's bucket before the backlog emptied"
        return out
    t_start, n_start = held[0]
    t_end = _time_at(rel, end_n)
    rate = (end_n - n_start) / (t_end - t_start) if t_end > t_start else math.nan
    refused = [q for t, _, _, q in rel if t_start <= t <= t_end]
    out.update(
        {
            "burst_s": round(t_start, 2),
            "burst_ops": n_start,
            "steady_window_ops": end_n - n_start,
            "steady_window_s": round(t_end - t_start, 2),
            "steady_ops_per_s": round(rate, 2),
            "steady_pct_of_limit": round(100 * rate / PORTAL_LIMIT_OPS_PER_S, 1),
            "steady_refusals": (refused[-1] - refused[0]) if len(refused) >= 2 else 0,
        }
    )
    return out


def during_outage(
    request_times: list[float],
    events: list[tuple[float, str]],
    *,
    at_begin: dict[str, Any],
    at_end: dict[str, Any],
    begin_s: float,
    end_s: float,
) -> dict[str, Any]:
    """What the portal received while it was down, and the gate's rhythm (pause, probes, reopen)."""
    pauses = [t for t, e in events if e == "pause" and t >= begin_s - 1]
    probes = [t for t, e in events if e in ("probe_failed", "reopened") and t >= begin_s - 1]
    reopened = [t for t, e in events if e == "reopened" and t >= begin_s - 1]
    paused_at = pauses[0] if pauses else None
    # Requests that were already past the gate when the pause was recorded (sent by the worker's other
    # senders in the same instant) are the pause's cost, not the probes': the first interval starts
    # IN_FLIGHT_GRACE_S after the pause, and what arrived in that grace is reported on its own.
    settled = None if paused_at is None else paused_at + IN_FLIGHT_GRACE_S
    marks = ([settled] if settled is not None else []) + [t for t in probes if t <= end_s] + [end_s]
    intervals = per_interval(request_times, marks)
    gate_rhythm = ([paused_at] if paused_at is not None else []) + [t for t in probes if t <= end_s]
    in_grace = [] if paused_at is None else [t for t in request_times if paused_at <= t < settled]
    fields_calls = at_end["calls"].get("crm.deal.fields", {})
    fields_before = at_begin["calls"].get("crm.deal.fields", {})
    return {
        "requests_received_during_outage": at_end["requests"] - at_begin["requests"],
        "request_times_during_outage_s": [round(t, 2) for t in request_times if begin_s <= t <= end_s],
        "probes_received_during_outage": sum(fields_calls.values()) - sum(fields_before.values()),
        "paused_at_s": paused_at,
        "paused_after_outage_began_s": None if paused_at is None else round(paused_at - begin_s, 2),
        "probe_times_s": probes,
        "probe_intervals_s": [round(b - a, 1) for a, b in itertools.pairwise(gate_rhythm)],
        "requests_per_probe_interval": intervals,
        "max_requests_in_a_probe_interval": max(intervals, default=0),
        "requests_in_flight_after_pause": len(in_grace),
        "requests_before_pause": sum(1 for t in request_times if begin_s <= t < (paused_at or end_s)),
        "reopened_at_s": reopened[0] if reopened else None,
        "reopened_after_outage_ended_s": round(reopened[0] - end_s, 2) if reopened else None,
    }


def targets(r: dict[str, Any]) -> dict[str, bool | None]:
    pct = r["drain"].get("steady_pct_of_limit")
    return {
        "no_dead_letters": r["accounting"]["dead_lettered"] == 0,
        "at_most_one_request_per_probe_interval": r["max_requests_in_a_probe_interval"] <= 1,
        "steady_drain_at_least_97pct": None if pct is None else pct >= 97.0,
        "every_operation_applied_once": r["accounting"]["every_operation_applied_once"],
    }


def refresh(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recompute the drain and the targets from the saved samples (so saved results follow the definitions
    in this module, as they are now)."""
    for r in results:
        o = r["ours"]
        if "samples" not in o:
            continue
        reopen = o["reopened_at_s"] if o["reopened_at_s"] is not None else o["outage"]["end_s"]
        o["drain"] = drain([(t, a, q, x) for t, a, q, x in o["samples"]], reopen, 0, o["operations"])
        o["targets"] = targets(o)
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    """The docs table: one row per scenario for our worker, one for the naive worker beside it."""
    head = (
        "| outage | client | operations | dead-lettered / given up | requests the portal received during "
        "the outage | probe intervals (s) | most requests in a probe interval | reopened after the outage "
        "| drain after the fresh burst | time to empty (ideal) | applied exactly once |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        o, n, kind = r["ours"], r["naive"], r["plan"]["kind"]
        label = f"{kind}, {r['plan']['outage_s']:.0f} s"
        if "error" in o:
            rows.append(f"| {label} | bitrix-worker | failed: {o['error']} |  |  |  |  |  |  |  |  |")
        else:
            d, acc = o["drain"], o["accounting"]
            steady = (
                f"**{d['steady_ops_per_s']:.1f}/s = {d['steady_pct_of_limit']:.1f}%** of 100/s "
                f"({d['steady_window_ops']:,} in {d['steady_window_s']:.1f} s)"
                if "steady_ops_per_s" in d
                else d.get("steady_note", "")
            )
            rows.append(
                f"| {label} | bitrix-worker | {o['operations']:,} | **{acc['dead_lettered']}** | "
                f"{o['requests_received_during_outage']} ({o['requests_before_pause']} before the pause, "
                f"{o['requests_in_flight_after_pause']} in flight at it, "
                f"{o['probes_received_during_outage']} probes) | "
                f"{', '.join(f'{x:.0f}' for x in o['probe_intervals_s'])} | "
                f"**{o['max_requests_in_a_probe_interval']}** | {o['reopened_after_outage_ended_s']} s | "
                f"{steady} | {d.get('time_to_empty_s')} s ({d.get('ideal_time_to_empty_s')} s) | "
                f"{'yes' if acc['every_operation_applied_once'] else 'NO'} "
                f"({acc['applied_at_portal']:,} updates applied) |"
            )
        if n is not None and "error" not in n:
            rows.append(
                f"| {label} | naive | {n['applied'] + n['given_up']:,} taken | **{n['given_up']:,}** "
                f"({n['given_up_during_outage']:,} during the outage) | {n['during']['requests']:,} sent, "
                f"{n['during']['requests_received_by_portal']:,} received | none | - | - | - | - | "
                f"{n['applied']:,} applied |"
            )
    return head + "\n".join(rows) + "\n"


def summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        ours, naive = r["ours"], r["naive"]
        if "error" in ours or (naive is not None and "error" in naive):
            rows.append(
                {
                    "scenario": r["plan"]["kind"],
                    "ours": ours.get("error"),
                    "naive": (naive or {}).get("error"),
                }
            )
            continue
        rows.append(
            {
                "scenario": ours["scenario"],
                "outage_s": r["plan"]["outage_s"],
                "dead_lettered": ours["accounting"]["dead_lettered"],
                "requests_during_outage": ours["requests_received_during_outage"],
                "probe_intervals_s": ours["probe_intervals_s"],
                "max_requests_per_probe_interval": ours["max_requests_in_a_probe_interval"],
                "reopened_after_outage_s": ours["reopened_after_outage_ended_s"],
                "drain": ours["drain"],
                "applied_once": ours["accounting"]["every_operation_applied_once"],
                "targets": ours["targets"],
                "naive_given_up": None if naive is None else naive["given_up"],
                "naive_given_up_during_outage": None if naive is None else naive["given_up_during_outage"],
                "naive_requests_during_outage": None if naive is None else naive["during"]["requests"],
            }
        )
    return rows
