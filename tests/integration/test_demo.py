"""`bitrix-worker demo` as a subprocess on the test Redis, and its fakeredis fallback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import redis

from bitrix_worker.demo.report import naive_requests


def _demo(redis_url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "REDIS_URL", "DATABASE_URL"))}
    if redis_url:
        env["REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "bitrix_worker", "demo", *args],
        env={**env, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _accounted(out: str) -> tuple[int, int, int, int]:
    found = re.search(
        r"every operation accounted for: (\d+) enqueued = (\d+) applied \+ (\d+) skipped \+ (\d+)", out
    )
    assert found, out
    total, applied, skipped, dead = (int(g) for g in found.groups())
    assert total == applied + skipped + dead
    return total, applied, skipped, dead


def _orders(out: str) -> dict[str, int]:
    """The rows of the demo's Orders table."""
    found = {
        m.group(1).strip(): int(m.group(2)) for m in re.finditer(r"│\s*([a-z(][^│]*?)\s*│\s*(\d+)\s*│", out)
    }
    assert "Orders (customer + deal with a $ref + product rows)" in out
    return found


def test_demo_on_the_test_redis_accounts_for_everything_and_cleans_up(
    redis_url: str, key_prefix: str
) -> None:
    started = time.monotonic()
    result = _demo(redis_url, "--orders", "60", "--prefix", key_prefix)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Redis: external Redis at" in out
    total, applied, skipped, dead = _accounted(out)
    # customers, deal creates (with a $ref to the customer and rows), paid updates, won updates, late
    # duplicates, 2 bad entries
    assert total == 60 * 4 + 60 // 15 + 2
    assert applied > 0
    # deleted in Bitrix24 or stale (a late update of an order whose create was refused waits with it)
    assert skipped + dead >= 60 // 12 + 60 // 15
    assert dead >= 2 + 2  # invalid currency (create and its update) and the two bad entries
    for title in ("Outcomes", "Bitrix24 calls spent", "naive policy", "Dead letters", "0 duplicates"):
        assert title in out
    assert "invalid_data" in out
    assert "deleted_in_bitrix24" in out
    assert re.search(r"created; product rows set \(\d\)", out)
    orders = _orders(out)
    assert orders["customer (contact) operations applied"] == 60
    # every deal left in Bitrix24 (the refused currencies and a user's deletions aside) is a whole order
    assert orders["orders in Bitrix24 linked to their own customer, with product rows"] >= 60 - 60 // 12 - 2
    assert orders["deals linked to a wrong or no customer"] == 0
    assert (
        orders["product rows they carry"]
        >= orders["orders in Bitrix24 linked to their own customer, with product rows"]
    )
    assert elapsed < 60
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"*{key_prefix}*")) == []  # its keys are gone
    finally:
        client.close()


def test_demo_falls_back_to_fakeredis_with_one_in_process_worker() -> None:
    result = _demo(None, "--orders", "30", "--backend", "fakeredis")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in-process fakeredis" in result.stdout
    _accounted(result.stdout)
    orders = _orders(result.stdout)
    assert orders["orders in Bitrix24 linked to their own customer, with product rows"] >= 30 - 30 // 12 - 1
    assert orders["deals linked to a wrong or no customer"] == 0


def test_naive_cost_formula() -> None:
    records = [
        {"outcome": "applied", "reason": "created", "attempts": "0"},
        {"outcome": "applied", "reason": "updated", "attempts": "2"},
        {"outcome": "skipped", "reason": "stale"},
        {"outcome": "skipped", "reason": "deleted_in_bitrix24"},
        {"outcome": "dead_lettered", "reason": "invalid_data: retry budget of 1 spent"},
    ]
    assert naive_requests(records, unrecorded_dead=1) == 1 + 3 + 1 + 6 + 6 + 6


def test_demo_dashboard_stays_up_until_interrupted(redis_url: str, key_prefix: str) -> None:
    """`demo --dashboard` keeps the page up over what the demo did, and Ctrl-C still cleans up."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    env = {**os.environ, "REDIS_URL": redis_url}
    args = [sys.executable, "-m", "bitrix_worker", "demo", "--orders", "20", "--prefix", key_prefix]
    proc = subprocess.Popen(
        [*args, "--dashboard", "--dashboard-port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the demo never announced its dashboard"
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200
            assert "bitrix-worker" in page.read().decode()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) in (0, 1)
    finally:
        if proc.poll() is None:
            proc.kill()
