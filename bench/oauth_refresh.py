"""OAuth under load: one portal whose access token expires every ``lifetime_s``, served by ``workers`` worker
processes (``bitrix-worker run`` with ``BITRIX_WORKER_PORTAL``) while operations arrive at ``rate`` per
second for ``duration_s``. The emulator (OAuth mode, the portal's default limits: burst 50, 2 requests/s)
counts at the portal's side: expiries seen (distinct access tokens answered ``expired_token``), refreshes,
refreshes of a token that had not expired yet, and ``invalid_grant`` answers. The worker side: dead letters
and operations applied; every refresh's pair must be in the registry (its version = refreshes).

    python -m bench.oauth_refresh                       # 60 s tokens, 4 workers, 330 s of load
    python -m bench.oauth_refresh --quick               # 10 s tokens, 70 s of load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bitrix_worker.emulator import EmulatorConfig, EmulatorServer
from bitrix_worker.emulator.oauth import OAuthConfig
from bitrix_worker.operations import Entity, OpKind
from bitrix_worker.portals.model import OAuthTokens, PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key
from bitrix_worker.producer import build_operation, enqueue_many

from .common import redis_url


async def run(workers: int, lifetime_s: float, duration_s: float, rate: float) -> dict[str, Any]:
    oauth = OAuthConfig(access_lifetime_s=lifetime_s)
    tmp = Path(tempfile.mkdtemp(prefix="bench-oauth-"))
    prefix = f"bench-oauth-{uuid.uuid4().hex[:8]}"
    database_url = f"sqlite+aiosqlite:///{tmp / 'db.sqlite3'}"
    key, pid = new_key(), f"{prefix}.bitrix24.test"
    async with EmulatorServer(EmulatorConfig(oauth=oauth)) as emulator:
        registry = await PortalRegistry.connect(database_url, box=SecretBox([key]))
        await registry.add(
            PortalRecord(
                pid,
                "oauth",
                f"{emulator.base_url}/rest/",
                client_id=oauth.client_id,
                client_secret=oauth.client_secret,
                tokens=OAuthTokens(oauth.access_token, oauth.refresh_token),
                token_url=f"{emulator.base_url}/oauth/token/",
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "DATABASE_URL"))}
        env |= {
            "REDIS_URL": redis_url(),
            "DATABASE_URL": database_url,
            "BITRIX_WORKER_PORTAL": pid,
            "BITRIX_WORKER_SECRETS_KEY": key,
            "BITRIX_WORKER_STREAM": f"{prefix}:ops",
            "BITRIX_WORKER_DEAD_STREAM": f"{prefix}:dead",
            "BITRIX_WORKER_HTTP_PORT": "0",
            "BITRIX_WORKER_LOG_FORMAT": "json",
        }
        logs = [open(tmp / f"worker-{i}.log", "wb") for i in range(workers)]  # noqa: SIM115, ASYNC230
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bitrix_worker", "run",
                env={**env, "BITRIX_WORKER_CONSUMER": f"w{i}"}, stdout=logs[i], stderr=logs[i],
            )
            for i in range(workers)
        ]  # fmt: skip
        redis = aioredis.Redis.from_url(redis_url())
        sent = 0
        try:
            await asyncio.sleep(3)  # the workers start
            started = time.monotonic()
            while time.monotonic() - started < duration_s:
                due = int((time.monotonic() - started) * rate) - sent
                if due > 0:
                    ops = [
                        build_operation(OpKind.CREATE, Entity.DEAL, f"k{sent + i}", {"TITLE": "t"}, None)
                        for i in range(due)
                    ]
                    await enqueue_many(redis, ops, stream=f"{prefix}:ops")
                    sent += due
                await asyncio.sleep(0.1)
            deadline = time.monotonic() + 120
            while len(emulator.app.portal.store.all("deal")) < sent and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            assert emulator.app.portal.oauth is not None
            stats = emulator.app.portal.oauth.snapshot()
            dead = await redis.xlen(f"{prefix}:dead")
            pair, state = await registry.tokens(pid)
        finally:
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                await p.wait()
            for log in logs:
                log.close()
            keys = [k async for k in redis.scan_iter(match=f"*{prefix}*", count=500)]
            keys += [k async for k in redis.scan_iter(match=f"*{pid}*", count=500)]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
            await registry.close()
        refreshes_by_process = [
            sum(
                '"access token refreshed"' in line
                for line in (tmp / f"worker-{i}.log").read_text().splitlines()
            )
            for i in range(workers)
        ]
        return {
            "workers": workers,
            "token_lifetime_s": lifetime_s,
            "load_s": duration_s,
            "operations": sent,
            "applied_at_portal": len(emulator.app.portal.store.all("deal")),
            "dead_letters": dead,
            "expiries_seen": stats["expiries_seen"],
            "refreshes": stats["refreshes"],
            "refreshes_by_process": refreshes_by_process,
            "early_refreshes": stats["early_refreshes"],
            "invalid_grant": stats["invalid_grant"],
            "expired_token_answers": stats["expired"],
            "registry_token_version": pair.version,
            "registry_state": state,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--lifetime-s", type=float, default=60.0)
    parser.add_argument("--duration-s", type=float, default=330.0)
    parser.add_argument("--rate", type=float, default=40.0, help="operations per second")
    parser.add_argument("--quick", action="store_true", help="10 s tokens, 70 s of load")
    a = parser.parse_args()
    if a.quick:
        a.lifetime_s, a.duration_s = 10.0, 70.0
    print(json.dumps(asyncio.run(run(a.workers, a.lifetime_s, a.duration_s, a.rate)), indent=2))


if __name__ == "__main__":
    main()
