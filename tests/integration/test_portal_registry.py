"""The portal registry on SQLite and PostgreSQL: CRUD, state changes, secrets encrypted at rest (the raw row
never holds one), compare-and-set of the OAuth pair, and key rotation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bitrix_worker.errors import ConfigError, RegistryError
from bitrix_worker.portals.model import PLANS, OAuthTokens, PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key
from conftest import drop_table

ACCESS, REFRESH = "access-token-0123456789", "refresh-token-0123456789"
CLIENT_SECRET, APP_TOKEN = "client-secret-0123456789", "application-token-0123456789"
WEBHOOK = "https://w1.bitrix24.com/rest/1/webhooksecret0123/"
ALL_SECRETS = (ACCESS, REFRESH, CLIENT_SECRET, APP_TOKEN, WEBHOOK, "webhooksecret0123")


def oauth_record(pid: str = "p1.bitrix24.com") -> PortalRecord:
    return PortalRecord(
        pid,
        "oauth",
        f"https://{pid}/rest/",
        plan=PLANS["enterprise"],
        client_id="local.app.1",
        client_secret=CLIENT_SECRET,
        tokens=OAuthTokens(ACCESS, REFRESH, 1_780_000_000),
        member_id="m-1",
        application_token=APP_TOKEN,
    )


def webhook_record(pid: str = "w1.bitrix24.com") -> PortalRecord:
    return PortalRecord(pid, "webhook", f"https://{pid}/rest/", webhook_url=WEBHOOK)


@pytest.fixture
def target(store_target: tuple[str, str, str]) -> tuple[str, str, str]:
    backend, url, table = store_target
    return backend, url, table.replace("bitrix_mapping", "bitrix_portals")


@pytest.fixture
async def registry(target: tuple[str, str, str]) -> AsyncIterator[tuple[PortalRegistry, str]]:
    backend, url, table = target
    key = new_key()
    reg = await PortalRegistry.connect(url, box=SecretBox([key]), table=table)
    try:
        yield reg, key
    finally:
        await reg.close()
        if backend == "postgres":
            await drop_table(url, table)


async def raw_rows(target: tuple[str, str, str]) -> list[dict[str, Any]]:
    """The table as the database holds it, read without the registry."""
    backend, url, table = target
    query = text(f'SELECT * FROM "{table}"')
    if backend == "sqlite":
        engine = create_engine(make_url(url).set(drivername="sqlite"))
        try:
            with engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(query)]
        finally:
            engine.dispose()
    aengine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))
    try:
        async with aengine.connect() as aconn:
            return [dict(r._mapping) for r in await aconn.execute(query)]
    finally:
        await aengine.dispose()


async def test_crud_round_trip(registry: tuple[PortalRegistry, str]) -> None:
    reg, _ = registry
    await reg.add(oauth_record())
    await reg.add(webhook_record())
    got = await reg.get("p1.bitrix24.com")
    assert got == oauth_record()
    assert (await reg.get("w1.bitrix24.com")).webhook_url == WEBHOOK
    assert [r.portal_id for r in await reg.records()] == ["p1.bitrix24.com", "w1.bitrix24.com"]

    with pytest.raises(RegistryError, match="already registered"):
        await reg.add(oauth_record())
    await reg.add(oauth_record().with_state("paused", "maintenance"), replace=True)
    assert (await reg.get("p1.bitrix24.com")).state == "paused"

    await reg.set_state("p1.bitrix24.com", "active")
    assert (await reg.get("p1.bitrix24.com")).state == "active"
    with pytest.raises(RegistryError, match="no portal 'nope'"):
        await reg.set_state("nope", "paused")
    with pytest.raises(RegistryError, match="no portal"):
        await reg.get("nope")
    assert await reg.find("nope") is None

    assert await reg.remove("w1.bitrix24.com") is True
    assert await reg.remove("w1.bitrix24.com") is False
    assert [r.portal_id for r in await reg.records()] == ["p1.bitrix24.com"]


async def test_the_raw_row_holds_no_secret(
    registry: tuple[PortalRegistry, str], target: tuple[str, str, str]
) -> None:
    reg, _ = registry
    await reg.add(oauth_record())
    await reg.add(webhook_record())
    await reg.store_tokens("p1.bitrix24.com", OAuthTokens(ACCESS + "x", REFRESH + "x"), expected_version=0)
    rows = await raw_rows(target)
    assert len(rows) == 2
    dump = repr(rows)
    for secret in ALL_SECRETS:
        assert secret not in dump
    assert "local.app.1" in dump  # the client id is not a secret: kept plain, so it can be searched


async def test_listing_needs_no_key_but_reading_a_secret_does(
    registry: tuple[PortalRegistry, str], target: tuple[str, str, str]
) -> None:
    reg, _ = registry
    await reg.add(oauth_record())
    _, url, table = target
    keyless = await PortalRegistry.connect(url, box=None, table=table)
    try:
        [listed] = await keyless.records()
        assert listed.state == "active"
        assert listed.tokens is None
        assert listed.client_secret is None
        await keyless.set_state("p1.bitrix24.com", "paused", "by hand")
        with pytest.raises(ConfigError, match="BITRIX_WORKER_SECRETS_KEY"):
            await keyless.get("p1.bitrix24.com")
    finally:
        await keyless.close()


async def test_tokens_are_written_by_compare_and_set(registry: tuple[PortalRegistry, str]) -> None:
    reg, _ = registry
    await reg.add(oauth_record())
    pair, state = await reg.tokens("p1.bitrix24.com")
    assert (pair.access_token, pair.refresh_token, pair.version, state) == (ACCESS, REFRESH, 0, "active")
    first = OAuthTokens("a1-0123456789", "r1-0123456789", 5)
    assert await reg.store_tokens("p1.bitrix24.com", first, expected_version=0) is True
    late = OAuthTokens("a2-0123456789", "r2-0123456789", 6)
    assert await reg.store_tokens("p1.bitrix24.com", late, expected_version=0) is False  # lost the race
    pair, _ = await reg.tokens("p1.bitrix24.com")
    assert (pair.access_token, pair.refresh_token, pair.expires_at, pair.version) == (
        "a1-0123456789",
        "r1-0123456789",
        5,
        1,
    )


async def test_key_rotation(registry: tuple[PortalRegistry, str], target: tuple[str, str, str]) -> None:
    reg, old = registry
    await reg.add(oauth_record())
    await reg.add(webhook_record())
    _, url, table = target
    new = new_key()
    both = await PortalRegistry.connect(url, box=SecretBox.from_setting(f"{new},{old}"), table=table)
    only_new = await PortalRegistry.connect(url, box=SecretBox([new]), table=table)
    try:
        with pytest.raises(RegistryError, match="cannot be decrypted"):
            await only_new.get("p1.bitrix24.com")
        assert (await both.get("p1.bitrix24.com")) == oauth_record()  # old rows read during the change
        assert await both.rotate_secrets() == 2
        assert (await only_new.get("p1.bitrix24.com")) == oauth_record()
        assert (await only_new.get("w1.bitrix24.com")).webhook_url == WEBHOOK
        with pytest.raises(RegistryError, match="cannot be decrypted"):
            await reg.get("p1.bitrix24.com")  # the old key alone no longer reads it
    finally:
        await both.close()
        await only_new.close()


async def test_a_unique_table_per_registry(target: tuple[str, str, str]) -> None:
    """Two deployments may share a database with their own registry tables."""
    backend, url, table = target
    other = f"{table}_{uuid.uuid4().hex[:6]}"
    box = SecretBox([new_key()])
    a = await PortalRegistry.connect(url, box=box, table=table)
    b = await PortalRegistry.connect(url, box=box, table=other)
    try:
        await a.add(oauth_record())
        assert await b.records() == []
    finally:
        await a.close()
        await b.close()
        if backend == "postgres":
            await drop_table(url, table)
            await drop_table(url, other)
