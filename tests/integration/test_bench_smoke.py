"""Bounded smoke runs of every benchmark in bench/: they run end to end and account for every operation.

Small counts, a few seconds each; nothing here asserts a speed (the figures live in docs/benchmarks.md).
The benchmarks start the emulator and workers as subprocesses, exactly as ``python -m bench.run_all`` does,
on the test Redis (``BENCH_REDIS_URL``) under a unique key prefix that they delete afterwards.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from bench import cost, faults, orders, outage, outage_figures, peers, portal_shapes, threads, throughput
from bench.baseline import FROZEN
from bench.common import Emulator
from bench.report import render


@pytest.fixture(autouse=True)
def _bench_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_REDIS_URL", redis_url)


async def test_throughput_smoke_applies_every_update(tmp_path: Path) -> None:
    emu = await Emulator.start(tmp_path)
    try:
        one = await throughput.run_ours(emu, tmp_path, n=300, processes=1, timeout_s=60)
        two = await throughput.run_ours(emu, tmp_path, n=300, processes=2, timeout_s=60)
    finally:
        emu.stop()
    for r in (one, two):
        assert r["exit_codes"] == [0] * r["processes"]
        assert r["applied_by_portal"] == 300
        assert r["outcomes"] == {"outcome:applied": 300}
        assert r["requests"] >= 6  # 300 updates need at least 6 batches of 50
        assert "steady_ops_per_s" in r


async def test_orders_smoke_links_every_order_and_counts_requests(tmp_path: Path) -> None:
    emu = await Emulator.start(tmp_path)
    try:
        backlog = await orders.run_ours(emu, tmp_path, n=100, timeout_s=60)
        streamed = await orders.run_ours(emu, tmp_path, n=40, timeout_s=60, offered_per_s=40)
        naive = await orders.run_naive(emu, window_s=2)
    finally:
        emu.stop()
    for r, n in ((backlog, 100), (streamed, 40)):
        assert r["outcomes"] == {"outcome:applied": 2 * n}
        assert r["orders_done_by_portal"] == n
        audit = r["audit"]
        assert (audit["contacts"], audit["deals"]) == (n, n)
        assert audit["deals_not_linked_to_their_contact"] == audit["deals_with_wrong_rows"] == 0
        assert 0 < r["requests"] <= n  # batched: far fewer requests than orders
    assert naive["requests"] >= 3 * naive["orders_done"]  # one call per step


async def test_naive_smoke_accounts_for_what_it_took(tmp_path: Path) -> None:
    emu = await Emulator.start(tmp_path)
    try:
        r = await peers.run_naive_bench(emu, tmp_path, n=80, window_s=3)
    finally:
        emu.stop()
    assert r["operations_finished"] + r["not_reached_in_window"] == 80
    assert r["applied"] + r["given_up"] == r["operations_finished"]
    assert r["applied_by_portal"] == r["applied"]
    assert r["requests_seen_by_portal"] == r["requests"]


@pytest.mark.skipif(
    not peers.fast_bitrix24_available(), reason="fast_bitrix24 is not installed (pip install -e '.[bench]')"
)
async def test_fast_bitrix24_smoke_applies_a_small_workload(tmp_path: Path) -> None:
    emu = await Emulator.start(tmp_path)
    try:
        r = await peers.run_fast_bitrix24(emu, tmp_path, n=150, timeout_s=60)
    finally:
        emu.stop()
    assert r["exception"] is None
    assert r["applied_by_portal"] == 150
    assert r["results_returned"] == 150


@pytest.mark.skipif(
    not peers.library_available("b24pysdk"), reason="b24pysdk is not installed (pip install -e '.[bench]')"
)
async def test_b24pysdk_smoke_applies_a_small_workload(tmp_path: Path) -> None:
    emu = await Emulator.start(tmp_path)
    try:
        r = await peers.run_library(emu, tmp_path, "b24pysdk", n=150, timeout_s=60)
    finally:
        emu.stop()
    assert r["exception"] is None
    assert r["applied_by_portal"] == 150
    assert r["results_returned"] == 150
    assert r["requests"] == 3  # 150 updates in batches of 50, within the portal's burst


@pytest.mark.parametrize("scenario", ["once_per_second", "two_deployments"])
async def test_portal_shapes_smoke_applies_every_update(tmp_path: Path, scenario: str) -> None:
    r = await portal_shapes.run_scenario(scenario, tmp_path, n=300)
    assert r["exit_codes"] == [0] * r["streams"]
    assert r["applied_by_portal"] == 300
    assert r["outcomes"] == {"outcome:applied": 300}
    assert r["refusals_total"] == 0


async def test_fault_mix_smoke_accounts_for_every_operation(tmp_path: Path) -> None:
    mix = faults.FaultMix(bursts=1, burst_len=2, burst_every=4, outage_start_s=0.3, outage_s=0.5)
    fast = {
        "breaker_cooldown_s": 0.5,
        "breaker_max_cooldown_s": 1.0,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "rate_limit_backoff_base_s": 0.05,
        "batch_size": 10,  # more requests, so the limit burst and the outage both meet some
        "rate_burst": 1000,  # the portal's own bucket is widened too: only the injected refusals remain
        "rate_per_s": 100,
    }
    emu = await Emulator.start(tmp_path, seed=3)
    try:
        ours = await faults.run_ours(
            emu, tmp_path, n=300, timeout_s=60, mix=mix, portal_limits=(1000, 100.0), settings=fast
        )
        naive = await faults.run_naive_faults(
            emu, tmp_path, n=100, window_s=3, mix=mix, portal_limits=(1000, 100.0)
        )
    finally:
        emu.stop()
    acc = ours["accounting"]
    assert ours["exit_code"] == 0
    assert acc["every_operation_accounted"], acc["mismatches"]
    assert (
        acc["outcomes"]
        == {
            "applied": 285,
            "skipped:deleted_in_bitrix24": 9,
            "dead_lettered:invalid_data": 6,
        }
        or sum(acc["outcomes"].values()) == 300
    )
    assert acc["dead_letter_stream"] == 6
    assert ours["minimum"]["injected_limit_refusals"] == 2
    assert ours["commands"] >= ours["minimum"]["commands"]
    went = ours["where_requests_went"]
    assert went["requests_with_operations"] >= max(30, went["fewest_for_those_commands"])  # batches of 10
    assert went["reads_without_operations"] >= 1  # the start check at least
    assert went["limit_refusals"] == 2
    assert went["auth_refusals"] >= 1  # the outage, armed after the start check, met the run
    assert (
        went["requests_with_operations"]
        + went["reads_without_operations"]
        + went["limit_refusals"]
        + went["auth_refusals"]
        == ours["requests"]
    )
    assert naive["applied"] + naive["given_up"] == naive["operations_finished"]
    assert naive["commands_sent"] == naive["requests"]


async def test_cost_smoke_measures_both_variants_in_one_run(tmp_path: Path) -> None:
    # 1,000 keys, not 100: with 100 keys and 20,000 queued the worker parks most of the stream behind the
    # in-flight keys before applying the coalesced units (~3 s with nothing finished), longer than a window
    r = await cost.main(
        tmp_path, deals=1000, backlog=20_000, window_s=1.5, profile_s=0, repeats=1, backends=("sqlite",)
    )
    assert [(x["backend"], x["variant"]) for x in r["runs"]] == [
        ("sqlite", "baseline"),
        ("sqlite", "current"),
    ]
    for run in r["runs"]:
        assert run["updates"] > 0
        assert run["cpu_s_per_1000"] > 0
        assert run["main_thread_s"] > 0
        assert run["peak_rss_mb"] > 0
        assert run["waiting_at_start"] <= 20_000
    assert r["summary"]["sqlite"]["speedup"]["median"] > 0


async def test_outage_smoke_holds_everything_and_applies_each_operation_once(tmp_path: Path) -> None:
    """The long-outage benchmark in miniature: each kind of portal-wide outage (4 s; probes after 1 s, then
    every 2 s) with operations arriving on top of a backlog, all at once, and the naive worker through the
    HTML 503 one beside them."""
    fast = {"breaker_cooldown_s": 1.0, "breaker_max_cooldown_s": 2.0}
    plans = [
        outage.Plan(kind, outage_s=4.0, lead_s=1.0, arriving=200, backlog=100, drain_cap_s=40, settings=fast)
        for kind in outage.KINDS
    ]
    results, naive = await asyncio.gather(
        outage.main(plans, tmp_path, stagger_s=0, naive=False),
        outage.run_naive_side(plans[0], tmp_path / "naive", after_cap_s=5),
    )
    for r in results:
        ours = r["ours"]
        kind = ours["scenario"]
        assert ours["finished"], kind
        acc = ours["accounting"]
        assert acc["dead_lettered"] == 0, kind
        assert acc["outcomes"] == {"outcome:applied": 300}, kind
        assert acc["applied_at_portal"] == 300, kind
        assert acc["every_operation_applied_once"], (kind, acc["mismatches"])
        assert ours["paused_at_s"] is not None, kind
        assert ours["reopened_at_s"] is not None, kind
        assert ours["reopened_at_s"] >= ours["outage"]["end_s"], kind
        assert ours["max_requests_in_a_probe_interval"] <= 1, (kind, ours["requests_per_probe_interval"])
        if kind == "refused":
            assert ours["requests_received_during_outage"] == 0
        else:
            assert ours["probes_received_during_outage"] >= 1, kind
    # the naive worker gives operations up during the outage; every operation is accounted for
    assert naive["given_up_during_outage"] > 0
    finished = sum(naive[p]["operations_finished"] for p in ("before", "during", "after"))
    assert finished + naive["not_reached"] == 300
    assert naive["applied"] + naive["given_up"] == finished


def test_outage_drain_measures_the_steady_rate_only_once_the_portal_holds_the_worker() -> None:
    """A worker slower than the fresh burst (3.2 requests/s) is held by the portal's 2/s only after it has
    used the burst up: the steady window starts there, not at a fixed count, so it reads the portal's rate."""
    samples, t = [], 0.0
    while t < 200:
        sent = 0.0 if t < 100 else min(49 + 1.96 * (t - 100), 3.2 * (t - 100))
        samples.append((t, 1000 + min(3000 + int(sent * 50), 15000), 60 + int(sent), 0))
        t += 0.25
    d = outage_figures.drain(samples, 100.0, 1000, 15000)
    assert d["backlog_at_reopen"] == 12000
    assert d["burst_ops"] > outage_figures.BURST_OPS + 250  # not before the worker caught up with the bucket
    assert 97 <= d["steady_pct_of_limit"] <= 100.5
    assert outage_figures.per_interval([1.0, 2.0, 3.5, 7.0], [1.5, 3.5, 8.0]) == [1, 2]


def test_baseline_worker_runs_the_frozen_mapping_store(tmp_path: Path) -> None:
    """The baseline variant must really run the old module and redis-py's pure-Python parser, not silently
    fall back to the current code."""
    import subprocess
    import sys

    code = cost.BASELINE_CLI[1].replace("from bitrix_worker.cli import main; main()", "")
    code += "import bitrix_worker.mapping as m, bitrix_worker.delivery as d; "
    code += "import redis.utils as u; "
    code += "print(m.__file__, d.MappingStore is m.MappingStore, u.HIREDIS_AVAILABLE)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert out.stdout.split() == [str(FROZEN), "True", "False"]


def test_previous_worker_runs_the_extracted_tree(tmp_path: Path) -> None:
    """The *previous* variant must import the worker from the commit's extracted ``src/``, not from this
    checkout (the editable install would otherwise win silently)."""
    import subprocess
    import sys

    src = cost.extract_previous(tmp_path, "HEAD")
    code = cost.previous_cli(src)[1].replace("from bitrix_worker.cli import main; main()", "")
    code += "import bitrix_worker.mapping as m; print(m.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert out.stdout.strip() == str(src / "bitrix_worker" / "mapping.py")
    # each variant leads once per cycle of rounds; with two, the order alternates as it always did
    assert [cost.rounds_order(("a", "b", "c"), r) for r in range(3)] == [
        ("a", "b", "c"),
        ("b", "c", "a"),
        ("c", "a", "b"),
    ]
    assert cost.rounds_order(("baseline", "current"), 1) == ("current", "baseline")


def test_cost_micro_probe_measures_every_path(tmp_path: Path) -> None:
    """The in-process probe runs against a source tree and reports every path it times (the ``send`` path
    against an emulator of its own)."""
    from bench import cost_micro

    emulator = asyncio.run(Emulator.start(tmp_path, no_limits=True))
    try:
        got = cost_micro.probe(cost.ROOT / "src", None, cost_micro.send_env(emulator))
    finally:
        emulator.stop()
    assert set(got) == set(cost_micro.LABELS) - {"store_postgresql"}
    assert all(v > 0 for v in got.values())


def test_thread_attribution_and_report_rendering(tmp_path: Path) -> None:
    raw = (
        "thread (100): MainThread;run (bitrix_worker/cli.py:10);process (bitrix_worker/delivery.py:80);"
        "execute (sqlalchemy/engine.py:5) 30\n"
        "thread (100): MainThread;run (bitrix_worker/cli.py:10);_run_once (asyncio/base_events.py:1) 10\n"
        "thread (100): MainThread;run (bitrix_worker/cli.py:10);read (redis/conn.py:3);"
        "write (asyncio/selector_events.py:9) 20\n"
        "thread (100): MainThread;run (bitrix_worker/cli.py:10);settle (bitrix_worker/outcomes.py:3) 40\n"
        "thread (101): Thread-1 (_connection_worker_thread);run (aiosqlite/core.py:9) 5\n"
    )
    folded = threads.fold_threads(raw)
    assert folded[100]["samples"] == 100
    assert folded[101]["name"] == "Thread-1 (_connection_worker_thread)"
    # the loop thread ran 2 s, the database thread 1 s, a thread with no Python frames 1 s
    got = threads.attribute(100, {100: 2.0, 101: 1.0, 102: 1.0}, folded)
    areas = dict(got["by_area_pct"])
    assert areas["mapping store"] == 40.0  # 30% of the loop thread's 2 s + all of the database thread's 1 s
    assert areas["redis client"] == 10.0  # asyncio's transport working for redis-py is redis-py's
    assert areas["asyncio event loop"] == 5.0
    assert areas["bitrix_worker (the rest)"] == 20.0
    assert areas["not sampled (no Python frames)"] == 25.0
    assert got["store_pct"] == 40.0
    record = {
        "mode": "quick",
        "command": "python -m bench.run_all --quick",
        "started_at": "2026-01-01T00:00:00Z",
        "duration_s": 1.0,
        "machine": {"cpus": 2},
        "results": {},
    }
    (tmp_path / "sweep-20260101T000000Z.json").write_text(
        '{"command": "python -m bench.sweep 8000 0.98", "started_at": "2026-01-01T00:00:00Z", "rows": '
        '[{"rate_safety": 0.98, "processes": 1, "steady_ops_per_s": 98.0, "steady_pct_of_limit": 98.0, '
        '"steady_refusals": 0, "refusals_total": 0}]}'
    )

    def run(variant: str, cpu_s: float) -> dict[str, Any]:
        return {
            "backend": "sqlite", "variant": variant, "waiting_at_start": 1000, "window_s": 10.0,
            "updates": 10_000, "updates_per_s": 900.0, "cpu_s": cpu_s,
            "updates_per_cpu_s": round(10_000 / cpu_s),
            "cpu_s_per_1000": cpu_s / 10, "main_thread_s": cpu_s * 0.9, "other_threads_s": cpu_s * 0.1,
            "database_server_cpu_s_per_1000": None, "peak_rss_mb": 90.0,
        }  # fmt: skip

    runs = [run("baseline", 5.0), run("previous", 3.2), run("current", 2.5)]
    standalone = {
        "command": "python -m bench.cost_report", "started_at": "2026-01-01T00:00:01Z", "duration_s": 60.0,
        "machine": {"cpus": 2, "python": "3.11"}, "file": "cost-20260101T000001Z.json",
        "cost": {"repeats": 1, "runs": runs, "summary": cost.summarise(runs), "profiles": {},
                 "variants": ["baseline", "previous", "current"], "previous_commit": "abc1234"},
    }  # fmt: skip
    (tmp_path / "cost-20260101T000001Z.json").write_text(json.dumps(standalone))
    text = render(record, tmp_path / "quick-x.json", root=tmp_path)
    assert "rate_safety sweep" in text
    assert "`python -m bench.cost_report`, started 2026-01-01T00:00:01Z" in text  # the newer cost run
    assert "| SQLite | before (37ab23b) | **2,000** (2,000–2,000) |" in text
    assert "| SQLite | previous (abc1234) | **3,125** (3,125–3,125) |" in text
    assert "| SQLite | current | **4,000** (4,000–4,000) |" in text
    assert "| **2** (2–2)x | **1.28** (1.28–1.28)x |" in text  # current ÷ baseline, current ÷ previous
    assert "SQLite ≥ 6,000/CPU-s: 4,000 (**not met**)" in text
    assert "| 0.98 | 1 | 98.00 | 98.00% | 0 | 0 |" in text


async def test_until_idle_returns_on_an_empty_stream(bench: Any) -> None:
    """Regression: a worker that finds nothing to do must exit (a cancel swallowed by redis-py's send on
    Python 3.11 used to leave a background duty looping, so the second of two workers never returned)."""
    for _ in range(3):
        summary = await bench.run(timeout_s=5)
        assert summary.total == 0


async def test_claim_that_parks_everything_does_not_wait_for_new_entries(
    redis_client: Any, key_prefix: str
) -> None:
    """Regression (found by the cost smoke, where 20,000 updates cycle over 100 deals): when a claim parks
    every entry it read because their keys are in flight, the worker must claim again at once while unread
    entries remain, not block ``block_ms`` waiting for an entry newer than the newest. (A claim reads on
    past parked entries up to 4 x its count, so it takes six rounds of ten keys to leave some unread.)"""
    import json
    import time

    from bitrix_worker.defaults import StreamKeys
    from bitrix_worker.redis.streams import OperationQueue

    keys = StreamKeys(stream=f"{key_prefix}:ops", dead=f"{key_prefix}:dead")
    for i in range(60):  # k0..k9, six times over
        payload = {"op": "update", "entity": "deal", "key": f"k{i % 10}", "fields": {"N": i}}
        await redis_client.xadd(keys.stream, {"payload": json.dumps(payload)})
    queue = OperationQueue(redis_client, keys, group="g", consumer="c")
    await queue.ensure_group()
    owned, _ = await queue.claim(10)
    assert len(owned) == 10  # k0..k9 now in flight
    parked, last = await queue.claim(10)
    assert parked == []  # rounds two to five of k0..k9 (40 entries read) wait for their turn
    started = time.monotonic()
    await queue.wait_for_new(last, 2000)
    assert time.monotonic() - started < 1.0  # ten unread entries are still there: no reason to block


async def test_dashboard_bench_smoke_renders_every_page(capfd: pytest.CaptureFixture[str]) -> None:
    from bench import dashboard

    await dashboard.main(backlog=2000, dead=1500, outcomes=1500, rounds=1)  # exit code: speed, not asserted
    table = capfd.readouterr().out
    for page in dashboard._pages({"dead_id": "1-0", "outcome_id": "1-0"}):
        assert page in table
    assert "slowest:" in table
