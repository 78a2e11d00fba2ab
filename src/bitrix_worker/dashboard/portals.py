"""Many portals in one dashboard: the Portals page, and every page of one registry portal under
``/p/<portal id>/`` (overview, find, dead letters, portal controls: the same handlers, on that portal's
stream, dead-letter stream, mapping table, gate and limiter; ``portal_access``).

The registry is re-read at most every ``DIRECTORY_TTL_S`` (one query, no secrets, no key needed). Without
registry portals nothing changes: no Portals link, and the pages at ``/`` are the default portal's as
before. An id the registry does not know is a 404 page. Each portal's chart and dead-letter breakdown are
kept apart (``PortalView``), created on a portal's first visit; only registry ids ever get one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from ..config import Settings
from ..errors import BitrixWorkerError
from ..portal_access import registry_records, settings_for
from ..portals.model import PortalRecord
from ..redis.breaker import Breaker
from ..redis.gauges import QueueReader
from . import pages as web
from .data import ClassCache
from .timeline import Timeline

DIRECTORY_TTL_S = 10.0
PREFIX = "/p"


@dataclass(slots=True)
class PortalView:
    """One portal as the pages see it: its settings, its registry record, its URL prefix and its caches."""

    portal_id: str
    settings: Settings
    record: PortalRecord | None
    base: str
    timeline: Timeline
    classes: ClassCache


@dataclass(slots=True)
class Directory:
    """The registry's portals, re-read at most every ``ttl_s``; a registry that cannot be read counts as
    none (and says why on the Portals page), so the default portal's pages never depend on it."""

    ttl_s: float = DIRECTORY_TTL_S
    records: list[PortalRecord] = field(default_factory=list)
    error: str = ""
    at: float = -1e9
    views: dict[str, PortalView] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, settings: Settings) -> list[PortalRecord]:
        async with self._lock:
            if time.monotonic() - self.at > self.ttl_s:
                try:
                    self.records, self.error = await registry_records(settings), ""
                except BitrixWorkerError as exc:
                    self.records, self.error = [], str(exc)
                self.at = time.monotonic()
        return self.records

    async def view(self, settings: Settings, portal_id: str) -> PortalView | None:
        """The view of a registry portal (or the default one), None for an unknown id."""
        records = {r.portal_id: r for r in await self.refresh(settings)}
        record = records.get(portal_id)
        if record is None and portal_id != settings.default_portal:
            return None
        own = settings_for(settings, portal_id, record)
        known = self.views.get(portal_id)
        if known is None or known.settings.stream != own.stream:
            known = PortalView(
                portal_id, own, record, base_of(portal_id), Timeline(own.keys.outcomes), ClassCache()
            )
            self.views[portal_id] = known
        known.settings, known.record = own, record  # plan or state may have changed
        return known


def base_of(portal_id: str) -> str:
    return f"{PREFIX}/{quote(portal_id, safe='')}"


def directory_of(request: Request) -> Directory:
    directory: Directory = request.app.state.directory
    return directory


def scoped(handler: Any) -> Any:
    """``handler`` for the portal named in the path: the pages read ``web.settings_of`` and friends, which
    give that portal's; an unknown id is a 404 page."""

    async def endpoint(request: Request) -> Response:
        portal_id = request.path_params["portal"]
        view = await directory_of(request).view(web.settings_of(request), portal_id)
        if view is None:
            detail = f"No portal {portal_id!r} in the portal registry. The Portals page lists them."
            return web.problem(request, 404, "Unknown portal", detail)
        request.state.portal = view
        response: Response = await handler(request)
        return response

    return endpoint


async def _row(client: Any, settings: Settings, record: PortalRecord | None, now: int) -> dict[str, Any]:
    name = settings.portal_name
    gauges = await QueueReader(client, settings.keys, settings.group).gauges(now)
    breaker = await Breaker(
        client,
        settings.keys.breaker(name),
        cooldown_s=settings.breaker_cooldown_s,
        max_cooldown_s=settings.breaker_max_cooldown_s,
    ).state()
    return {
        "portal": name,
        "state": record.state if record else "active",
        "reason": record.state_reason if record else "",
        "plan": f"{record.plan.name} ({record.plan.burst}, {record.plan.rate_per_s:g}/s)" if record else "",
        "q": gauges,
        "breaker": breaker,
    }


async def portals_page(request: Request) -> Response:
    settings, client = web.settings_of(request), web.redis_of(request)
    directory = directory_of(request)
    records = await directory.refresh(settings)
    now = await QueueReader(client, settings.keys, settings.group).server_ms()
    wanted: list[tuple[Settings, PortalRecord | None, str]] = []
    if settings.default_portal is not None:
        default = [r for r in records if r.portal_id == settings.default_portal]
        wanted.append((settings, default[0] if default else None, "/"))
    wanted += [
        (settings_for(settings, r.portal_id, r), r, base_of(r.portal_id) + "/")
        for r in records
        if r.portal_id != settings.default_portal
    ]
    rows = await asyncio.gather(*(_row(client, s, r, now) for s, r, _ in wanted))
    for row, (_, _, href) in zip(rows, wanted, strict=True):
        row["href"], row["default"] = href, href == "/"
    return web.render(request, "portals.html", rows=rows, error=directory.error, registered=bool(records))


def routes(page_routes: list[Route]) -> list[BaseRoute]:
    """The Portals page, and ``page_routes`` again under ``/p/<portal id>`` for one portal."""
    mounted = [Route(r.path, scoped(r.endpoint), methods=r.methods) for r in page_routes]
    return [Route("/portals", portals_page), Mount(PREFIX + "/{portal}", routes=mounted)]
