"""One "process" of the OAuth refresh test: calls a registered OAuth portal from several tasks for a while
and prints what happened as JSON (calls that succeeded, failures, refreshes this process made).

    python oauth_load.py DATABASE_URL REGISTRY_TABLE PORTAL_ID REDIS_URL SECONDS TASKS
(the secrets key comes from BITRIX_WORKER_SECRETS_KEY, as for the worker)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from redis.asyncio import Redis

from bitrix_worker.errors import BitrixError
from bitrix_worker.portals.clients import open_portal_client
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox


async def load(  # noqa: PLR0917 - the script's argv, in order
    database_url: str, table: str, portal_id: str, redis_url: str, seconds: float, tasks: int
) -> dict[str, Any]:
    box = SecretBox.from_setting(os.environ.get("BITRIX_WORKER_SECRETS_KEY"))
    registry = await PortalRegistry.connect(database_url, box=box, table=table)
    redis = Redis.from_url(redis_url)
    ok = 0
    failures: list[str] = []
    try:
        record = await registry.get(portal_id)
        async with open_portal_client(
            record, registry=registry, redis=redis, connect_timeout_s=2, read_timeout_s=5
        ) as portal:
            end = time.monotonic() + seconds

            async def one() -> None:
                nonlocal ok
                while time.monotonic() < end:
                    try:
                        await portal.client.call("crm.deal.list", {"select": ["ID"]})
                        ok += 1
                    except BitrixError as exc:
                        failures.append(str(exc))
                    await asyncio.sleep(0.01)

            await asyncio.gather(*(one() for _ in range(tasks)))
            refreshes = portal.tokens.refreshes if portal.tokens else 0
    finally:
        await redis.aclose()
        await registry.close()
    return {"ok": ok, "failures": failures[:5], "failed": len(failures), "refreshes": refreshes}


if __name__ == "__main__":
    db, tbl, pid, rurl, secs, n = sys.argv[1:7]
    print(json.dumps(asyncio.run(load(db, tbl, pid, rurl, float(secs), int(n)))))
