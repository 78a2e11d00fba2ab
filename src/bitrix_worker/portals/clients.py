"""A Bitrix24 client for one registered portal: its webhook, or its OAuth application with a token manager.

The factory every caller uses (the worker's default portal, the CLI, tests), so that the wiring of an OAuth
portal (registry -> token manager -> refresh lock -> token endpoint -> request auth) exists once. Per
portal, no shared state: a multi-portal worker opens one per registry row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ..bitrix.auth import OAuthAuth
from ..bitrix.client import BitrixClient
from ..bitrix.marking import marking_transport
from ..bitrix.oauth import TokenEndpoint
from ..config import Settings
from ..defaults import oauth_refresh_key
from ..errors import ConfigError, RegistryError
from ..events import WorkerEvents
from ..redaction import WebhookUrl
from ..redis.connection import RedisClient
from ..redis.tokenlock import RefreshLock
from .model import PortalRecord
from .registry import PortalRegistry
from .secrets import SecretBox
from .tokens import TokenManager

__all__ = ["REFRESH_LOCK_S", "PortalClient", "open_default_client", "open_portal_client"]

REFRESH_LOCK_S = 30.0
"""The refresh lock's time-to-live: one token request (10 s timeout) plus the registry write, with room."""


@dataclass(slots=True)
class PortalClient:
    record: PortalRecord
    client: BitrixClient
    tokens: TokenManager | None  # None for a webhook portal


def client_options(settings: Settings) -> dict[str, Any]:
    """How a worker's Bitrix24 client talks HTTP: its timeouts, limits and pool (one per process)."""
    pool = settings.concurrency * 2 + 4
    return {
        "connect_timeout_s": settings.connect_timeout_s,
        "read_timeout_s": settings.read_timeout_s,
        "max_connections": pool,
        "request_deadline_s": settings.request_deadline_s,
        "max_response_bytes": settings.max_response_bytes,
        "transport": marking_transport(pool),  # marks a batch sent (poison cap)
    }


@asynccontextmanager
async def open_portal_client(
    record: PortalRecord,
    *,
    registry: PortalRegistry,
    redis: RedisClient,
    on_broken: Callable[[str], Awaitable[None]] | None = None,
    events: WorkerEvents | None = None,
    **client_options: Any,
) -> AsyncIterator[PortalClient]:
    """``client_options`` go to ``BitrixClient`` (timeouts, transport, caps)."""
    if record.auth == "webhook":
        if not record.webhook_url:
            raise RegistryError(f"portal {record.portal_id!r} has no webhook URL")
        client = BitrixClient(WebhookUrl.parse(record.webhook_url), **client_options)
        try:
            yield PortalClient(record, client, None)
        finally:
            await client.aclose()
        return
    if not record.client_id or not record.client_secret or record.tokens is None:
        raise RegistryError(f"portal {record.portal_id!r} lacks its OAuth client id, secret or tokens")
    endpoint = TokenEndpoint(record.token_url)
    manager = TokenManager(
        record.portal_id,
        registry=registry,
        lock=RefreshLock(redis, oauth_refresh_key(record.portal_id), ttl_s=REFRESH_LOCK_S),
        endpoint=endpoint,
        client_id=record.client_id,
        client_secret=record.client_secret,
        on_broken=on_broken,
        events=events,
    )
    client = BitrixClient(OAuthAuth(record.portal_id, record.endpoint, manager), **client_options)
    try:
        yield PortalClient(record, client, manager)
    finally:
        await client.aclose()
        await endpoint.aclose()


@asynccontextmanager
async def open_default_client(
    settings: Settings,
    redis: RedisClient,
    *,
    on_broken: Callable[[str], Awaitable[None]] | None = None,
    events: WorkerEvents | None = None,
    **client_options: Any,
) -> AsyncIterator[BitrixClient]:
    """The default portal's client: ``BITRIX_WEBHOOK_URL``, or the registry's ``BITRIX_WORKER_PORTAL``."""
    if not settings.portal:
        client = BitrixClient(settings.webhook, **client_options)
        try:
            yield client
        finally:
            await client.aclose()
        return
    key = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    box = SecretBox.from_setting(key)  # ConfigError naming the setting when it is missing
    registry = await PortalRegistry.connect(settings.database_url, box=box, table=settings.portals_table)
    try:
        record = await registry.find(settings.portal)
        if record is None:
            raise ConfigError("BITRIX_WORKER_PORTAL", f"no portal {settings.portal!r} in the registry")
        if record.state == "auth_broken":
            raise ConfigError(
                "BITRIX_WORKER_PORTAL",
                f"portal {record.portal_id} is auth_broken ({record.state_reason}); reinstall the app or "
                "store fresh tokens (bitrix-worker portals add --replace), then portals resume",
            )
        async with open_portal_client(
            record, registry=registry, redis=redis, on_broken=on_broken, events=events, **client_options
        ) as portal:
            yield portal.client
    finally:
        await registry.close()
