"""``portals refresh``: refresh OAuth pairs on demand, by the same lock protocol the workers use.

Bitrix24 asks applications to refresh when a call says ``expired_token``, so a busy portal never needs this.
An idle one does: its refresh token dies unused (current docs say 180 days; older pages say 28), and then
only a reinstall helps. Run ``bitrix-worker portals refresh --all`` weekly from cron; a refresh while
workers run is safe (one lock per portal, the stored pair re-read under it).
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..redis.connection import redis_connection
from .clients import open_portal_client
from .registry import PortalRegistry

__all__ = ["refresh_portals"]


async def refresh_portals(
    registry: PortalRegistry, settings: Settings, portal_id: str | None
) -> list[dict[str, Any]]:
    """One row per portal: ``refreshed``, or why not."""
    if portal_id is not None:
        ids = [portal_id]
    else:
        ids = [
            r.portal_id for r in await registry.records() if r.auth == "oauth" and r.state != "auth_broken"
        ]
    rows: list[dict[str, Any]] = []
    async with redis_connection(settings.redis_url) as redis:
        for pid in ids:
            record = await registry.get(pid)
            if record.auth != "oauth":
                rows.append({"portal": pid, "result": "not an OAuth portal"})
                continue
            async with open_portal_client(
                record, registry=registry, redis=redis, connect_timeout_s=10, read_timeout_s=10
            ) as portal:
                assert portal.tokens is not None
                done = await portal.tokens.refresh_now()
            version = (await registry.tokens(pid))[0].version
            rows.append(
                {"portal": pid, "result": "refreshed" if done.resend else done.note, "token_version": version}
            )
    return rows
