"""A Redis restart under load (kill -9, AOF on, restarted from its directory): nothing lost, nothing sent
twice, and the worker resumes within seconds instead of waiting for its entries to be reclaimed."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import open_bench

from bitrix_worker.worker import Worker


class PrivateRedis:
    """A redis-server of this test's own, persisting every write, that can be killed and started again."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: the restart test needs a Redis of its own to kill")
    server = PrivateRedis(binary, tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_a_redis_restart_under_load_resends_nothing_and_costs_seconds(
    private_redis: PrivateRedis, key_prefix: str, tmp_path: Path
) -> None:
    async with open_bench(private_redis.url, key_prefix, tmp_path) as bench:
        await bench.admin.set_faults(latency={"dist": "fixed", "s": 0.3})
        keys = [f"r-{i}" for i in range(40)]
        for key in keys:
            await bench.enqueue("create", key, {"TITLE": "x"})
        settings = bench.settings.model_copy(
            update={"batch_size": 4, "concurrency": 2, "claim_idle_ms": 60_000}
        )
        loop = asyncio.get_running_loop()
        async with Worker.open(settings) as worker:
            task = asyncio.create_task(worker.run(until_idle=True))
            for _ in range(200):
                if len(await bench.entities()) >= 8:
                    break
                await asyncio.sleep(0.05)
            private_redis.kill()  # batches are in flight: their answers arrive while Redis is gone
            await asyncio.sleep(1.5)
            private_redis.start()
            restarted = loop.time()
            await asyncio.wait_for(task, 40)
            recovered_s = loop.time() - restarted
        deals = await bench.entities()
        assert sorted(d["ORIGIN_ID"] for d in deals) == sorted(keys)  # each exactly once
        assert await bench.total_calls("crm.deal.add") == len(keys)  # nothing sent twice,
        assert await bench.total_calls("crm.deal.update") == 0  # not even as an update of what it made
        assert await bench.total_calls("crm.deal.list") == 0  # nor looked up: no create was in doubt
        assert await bench.dead() == []
        assert recovered_s < 20  # not the 60 s reclaim idle time
