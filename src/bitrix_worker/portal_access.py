"""One portal of the registry as an operator's tools reach it: the CLI's ``--portal`` and the dashboard's
portal pages.

A registry portal's work lives under its own names (``portal_layout``: stream ``<stream>:<portal>``, its
dead-letter stream, its mapping table, its gate, limiter and schema cache keys); ``fleet.portal_settings``
gives the settings of those names, and this module adds what a tool needs around them: which ids the
registry knows (read without the secrets key), the portal's client (its webhook, or its OAuth app with the
token manager that refreshes under the shared Redis lock), and one key's story read from its own table.
The default portal (the webhook, or ``BITRIX_WORKER_PORTAL``) keeps the configured names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from .bitrix.client import BitrixClient
from .config import Settings
from .errors import ConfigError, StoreError
from .keylookup import KeyReport, lookup
from .mapping import DEFAULT_TABLE, MappingStore
from .portal_layout import portal_table
from .portals.model import PortalRecord, check_portal_id
from .redis.connection import RedisClient
from .status import missing_sqlite_file

__all__ = [
    "entity_link",
    "gate_targets",
    "portal_client",
    "portal_lookup",
    "registry_records",
    "resolve_portal",
    "status_target",
]

OPTION = "--portal"


async def registry_records(settings: Settings) -> list[PortalRecord]:
    """Every registry portal without its secrets (no key needed); none while ``DATABASE_URL`` names a SQLite
    file that does not exist yet (a read never creates it). Database failures raise ``StoreError``."""
    from .portals.registry import PortalRegistry

    if missing_sqlite_file(settings.database_url) is not None:
        return []
    registry = await PortalRegistry.connect(settings.database_url, box=None, table=settings.portals_table)
    try:
        return await registry.records()
    finally:
        await registry.close()


def settings_for(settings: Settings, portal_id: str, record: PortalRecord | None) -> Settings:
    """The settings of ``portal_id``'s stream, keys and plan (the default portal: ``settings`` itself)."""
    from .fleet import portal_settings

    return settings if portal_id == settings.default_portal else portal_settings(settings, portal_id, record)


async def resolve_portal(settings: Settings, portal_id: str) -> tuple[Settings, PortalRecord | None]:
    """The settings of ``portal_id`` and its registry record (None for the default portal). ``ConfigError``
    naming ``--portal`` for an id the registry does not know."""
    try:
        check_portal_id(portal_id)
    except ValueError as exc:
        raise ConfigError(OPTION, str(exc)) from None
    if portal_id == settings.default_portal:
        return settings, None
    for record in await registry_records(settings):
        if record.portal_id == portal_id:
            return settings_for(settings, portal_id, record), record
    raise ConfigError(OPTION, f"no portal {portal_id!r} in the portal registry (bitrix-worker portals list)")


async def status_target(settings: Settings, portal_id: str) -> tuple[Settings, str | None]:
    """The settings (its plan when the registry has it) and mapping table that ``status --portal`` reads.
    Lenient on purpose: an id the registry does not know still has a stream to show (its entries are
    dead-lettered as unknown), and an unreadable registry leaves the default plan. The table is None for an
    id a readable registry does not hold: counting its rows would create an empty table for a typo."""
    try:
        records: list[PortalRecord] | None = await registry_records(settings)
    except StoreError:
        records = None
    record = next((r for r in records or () if r.portal_id == portal_id), None)
    table = portal_table(DEFAULT_TABLE, portal_id, settings.default_portal)
    unknown = records is not None and record is None and portal_id != settings.default_portal
    return settings_for(settings, portal_id, record), None if unknown else table


@asynccontextmanager
async def portal_client(
    settings: Settings, redis: RedisClient, portal_id: str | None, **options: Any
) -> AsyncIterator[tuple[Settings, BitrixClient]]:
    """The portal's settings and a client that calls it: the default portal's (``portal_id`` None or the
    default), else the registry portal's own webhook or OAuth app (needs ``BITRIX_WORKER_SECRETS_KEY``)."""
    from .portals.clients import open_default_client, open_portal_client
    from .portals.registry import PortalRegistry
    from .portals.secrets import SecretBox

    if portal_id is None or portal_id == settings.default_portal:
        settings.portal_name  # noqa: B018 - ConfigError naming BITRIX_WEBHOOK_URL when there is no default
        async with open_default_client(settings, redis, **options) as client:
            yield settings, client
        return
    own, _ = await resolve_portal(settings, portal_id)
    key = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    box = SecretBox.from_setting(key)  # ConfigError naming BITRIX_WORKER_SECRETS_KEY when it is missing
    registry = await PortalRegistry.connect(settings.database_url, box=box, table=settings.portals_table)
    try:
        record = await registry.get(portal_id)
        if record.state == "auth_broken":
            raise ConfigError(
                OPTION,
                f"portal {portal_id} is auth_broken ({record.state_reason}): store fresh tokens "
                f"(bitrix-worker portals add {portal_id} --replace ...), then portals resume",
            )
        async with open_portal_client(record, registry=registry, redis=redis, **options) as opened:
            yield own, opened.client
    finally:
        await registry.close()


def gate_targets(settings: Settings, portal_id: str) -> list[Settings]:
    """The settings of every gate ``portal_id`` has: the one under its own stream (where a multi-portal
    worker reads it) first, then the one under the configured stream (a worker whose default portal it is),
    when that is another stream."""
    from .fleet import portal_settings

    own = portal_settings(settings, portal_id, None)
    if own.stream == settings.stream:
        return [own]
    return [own, settings.model_copy(update={"portal": portal_id})]


def entity_link(endpoint: str, entity: str, bitrix_id: int | None) -> str | None:
    """The entity's page in the portal whose REST base is ``endpoint`` (scheme and host only)."""
    if bitrix_id is None:
        return None
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}/crm/{entity}/details/{bitrix_id}/" if parts.netloc else None


async def portal_lookup(
    redis: RedisClient,
    settings: Settings,
    record: PortalRecord | None,
    entity: str,
    key: str,
    *,
    scan_cap: int,
) -> KeyReport:
    """``keylookup.lookup`` for the portal of ``settings`` (from ``resolve_portal``): its streams and its
    own mapping table; the link goes to the registry portal's host, never the default webhook's."""
    if record is None:
        return await lookup(redis, settings, entity, key, scan_cap=scan_cap)
    table = portal_table(DEFAULT_TABLE, record.portal_id, None)  # a registry record: never the default
    store = None
    if missing_sqlite_file(settings.database_url) is None:
        store = await MappingStore.connect(settings.database_url, table=table)
    try:
        report = await lookup(redis, settings, entity, key, store=store, scan_cap=scan_cap)
    finally:
        if store is not None:
            await store.close()
    report.portal_link = entity_link(record.endpoint, entity, report.bitrix_id)
    return report
