"""Producers: the sync and async Python APIs, idempotent enqueue by op_id, and the README's PHP and Node
snippets run as printed, each entry then applied by a real worker against the emulator."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest
import redis
import redis.asyncio as aioredis
from harness import Bench

from bitrix_worker import (
    StoreError,
    build_operation,
    decode_payload,
    enqueue,
    enqueue_many,
    enqueue_many_sync,
    enqueue_sync,
)
from bitrix_worker.defaults import StreamKeys

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet(language: str) -> str:
    (block,) = re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    return block


@pytest.fixture
def sync_client(redis_url: str, key_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter(match=f"*{key_prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


def entries(client: redis.Redis, stream: str) -> list[tuple[str, dict[bytes, bytes]]]:
    return [(i.decode(), f) for i, f in client.xrange(stream)]


def test_sync_enqueue_and_enqueue_many(sync_client: redis.Redis, key_prefix: str) -> None:
    stream = f"{key_prefix}:ops"
    op = build_operation("update", "deal", "order-1", {"STAGE_ID": "WON"}, 3)
    first = enqueue_sync(sync_client, op, stream=stream)
    more = enqueue_many_sync(
        sync_client, [build_operation("create", "contact", f"c-{i}") for i in range(3)], stream=stream
    )
    rows = entries(sync_client, stream)
    assert [i for i, _ in rows] == [first, *more]
    assert decode_payload(rows[0][1][b"payload"]) == op
    assert [decode_payload(f[b"payload"]).key for _, f in rows[1:]] == ["c-0", "c-1", "c-2"]


def test_build_operation_names_the_allowed_values() -> None:
    with pytest.raises(pydantic.ValidationError, match="'create', 'update', 'upsert' or 'delete'"):
        build_operation("merge", "deal", "k")
    with pytest.raises(pydantic.ValidationError, match="valid dictionary"):
        build_operation("create", "deal", "k", [1])  # type: ignore[arg-type]


def test_sync_op_id_deduplicates_within_the_window(sync_client: redis.Redis, key_prefix: str) -> None:
    stream = f"{key_prefix}:ops"
    op = build_operation("update", "deal", "order-2", {"STAGE_ID": "WON"}, 7)
    first = enqueue_sync(sync_client, op, stream=stream, op_id="order-2:v7", dedupe_window_s=0.5)
    assert enqueue_sync(sync_client, op, stream=stream, op_id="order-2:v7", dedupe_window_s=0.5) == first
    other = enqueue_sync(sync_client, op, stream=stream, op_id="order-2:v8", dedupe_window_s=0.5)
    assert other != first
    rows = entries(sync_client, stream)
    assert [i for i, _ in rows] == [first, other]
    assert rows[0][1][b"op_id"] == b"order-2:v7"
    dedupe_key = StreamKeys(stream=stream, dead="unused").dedupe("order-2:v7")
    assert 0 < sync_client.pttl(dedupe_key) <= 500
    time.sleep(0.6)  # after the window the same op_id is a new enqueue
    again = enqueue_sync(sync_client, op, stream=stream, op_id="order-2:v7", dedupe_window_s=0.5)
    assert again not in (first, other)
    assert sync_client.xlen(stream) == 3


def test_concurrent_producers_add_one_entry_per_op_id(
    redis_url: str, sync_client: redis.Redis, key_prefix: str
) -> None:
    stream = f"{key_prefix}:ops"
    op = build_operation("create", "deal", "order-3", {"TITLE": "x"})
    ids: list[str] = []
    start = threading.Barrier(8)

    def produce() -> None:
        client = redis.Redis.from_url(redis_url)
        try:
            start.wait()
            ids.append(enqueue_sync(client, op, stream=stream, op_id="order-3:create"))
        finally:
            client.close()

    threads = [threading.Thread(target=produce) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(ids) == 8
    assert len(set(ids)) == 1
    assert sync_client.xlen(stream) == 1


def test_bad_op_id_and_redis_down(sync_client: redis.Redis, key_prefix: str) -> None:
    op = build_operation("create", "deal", "k")
    for bad in ("", "a\nb", "x" * 201):
        with pytest.raises(ValueError, match="op_id"):
            enqueue_sync(sync_client, op, stream=f"{key_prefix}:ops", op_id=bad)
    down = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    with pytest.raises(StoreError, match="enqueue failed"):
        enqueue_sync(down, op, op_id="x")
    with pytest.raises(StoreError, match="enqueue failed"):
        enqueue_many_sync(down, [op])


async def test_async_op_id_and_many(redis_client: aioredis.Redis, key_prefix: str) -> None:
    stream = f"{key_prefix}:ops"
    op = build_operation("upsert", "company", "co-1", {"TITLE": "Acme"})
    first = await enqueue(redis_client, op, stream=stream, op_id="co-1:1")
    results = await asyncio.gather(
        *(enqueue(redis_client, op, stream=stream, op_id="co-1:1") for _ in range(5))
    )
    assert set(results) == {first}
    many = await enqueue_many(redis_client, [op, op], stream=stream)
    assert await redis_client.xlen(stream) == 3
    assert many[0] > first


async def test_a_worker_applies_what_the_sync_producer_enqueued(bench: Bench, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        stream = bench.settings.stream
        enqueue_sync(
            client, build_operation("create", "deal", "sync-1", {"TITLE": "from Django"}), stream=stream
        )
        update = build_operation("update", "deal", "sync-1", {"STAGE_ID": "WON"}, 2)
        for _ in range(3):  # a producer retrying after timeouts
            enqueue_sync(client, update, stream=stream, op_id="sync-1:v2")
    finally:
        client.close()
    summary = await bench.run()
    assert summary.outcomes == {"applied": 2}
    (deal,) = await bench.entities()
    assert (deal["TITLE"], deal["STAGE_ID"], deal["ORIGIN_ID"]) == ("from Django", "WON", "sync-1")


async def _apply_snippet_entry(bench: Bench, run_snippet: list[str], cwd: Path, redis_url: str) -> None:
    """Create order-42 (the snippets update it), run the snippet, check its entry, let a worker apply it."""
    await bench.enqueue("create", "order-42", {"TITLE": "Order 42"})
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "REDIS_URL": redis_url,
        "BITRIX_WORKER_STREAM": bench.settings.stream,
    }
    done = await asyncio.to_thread(
        subprocess.run, run_snippet, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = await bench.redis.xrange(bench.settings.stream)
    printed = done.stdout.strip()
    assert printed == rows[-1][0].decode()  # the snippet prints the id of the entry it added
    operation = decode_payload(rows[-1][1][b"payload"])  # a valid operation, as the worker reads it
    assert (operation.op, operation.entity, operation.key, operation.version) == (
        "update",
        "deal",
        "order-42",
        7,
    )
    assert operation.fields == {"STAGE_ID": "WON", "OPPORTUNITY": 1990.5}
    summary = await bench.run()
    assert summary.outcomes == {"applied": 2}
    (deal,) = await bench.entities()
    assert deal["STAGE_ID"] == "WON"
    assert float(deal["OPPORTUNITY"]) == 1990.5


def _php_skip_reason() -> str | None:
    if shutil.which("php") is None:
        return "php not installed (apt-get install php-cli php-redis)"
    modules = subprocess.run(["php", "-m"], capture_output=True, text=True, check=False).stdout.split()
    if "redis" not in modules:
        return "the php redis extension is not installed (apt-get install php-redis)"
    return None


async def test_readme_php_snippet(bench: Bench, redis_url: str, tmp_path: Path) -> None:
    reason = _php_skip_reason()
    if reason:
        pytest.skip(reason)
    script = tmp_path / "produce.php"
    script.write_text(readme_snippet("php"), encoding="utf-8")
    await _apply_snippet_entry(bench, ["php", str(script)], tmp_path, redis_url)


@pytest.fixture(scope="session")
def ioredis_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ioredis installed from the npm registry (once per session), or skip."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed")
    where = tmp_path_factory.mktemp("node")
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "ioredis@5"],
        cwd=where, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"npm install ioredis failed (registry unreachable?): {done.stderr.strip()[-200:]}")
    return where


async def test_readme_node_snippet(bench: Bench, redis_url: str, ioredis_dir: Path) -> None:
    script = ioredis_dir / "produce.js"
    script.write_text(readme_snippet("js"), encoding="utf-8")
    await _apply_snippet_entry(bench, ["node", str(script)], ioredis_dir, redis_url)
