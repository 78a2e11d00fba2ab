"""OAuth done right, against the emulator's OAuth mode (tokens that expire, refresh tokens that rotate):

* one refresh per expiry across four processes, the others wait and reuse it; no ``invalid_grant``, no
  failed call (a stale-token refusal is resent, not reported);
* a dead refresh token (``invalid_grant``) marks the portal ``auth_broken`` and pauses its gate, once;
* a token endpoint that cannot be reached is a transient, not-executed failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from oauth_load import load
from redis.asyncio import Redis
from typer.testing import CliRunner

from bitrix_worker.cli import app
from bitrix_worker.config import Settings
from bitrix_worker.defaults import oauth_refresh_key
from bitrix_worker.emulator import EmulatorConfig, EmulatorServer
from bitrix_worker.emulator.oauth import OAuthConfig
from bitrix_worker.errors import AuthError, BitrixError
from bitrix_worker.gate import PortalGate
from bitrix_worker.portals.clients import open_portal_client
from bitrix_worker.portals.model import OAuthTokens, PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key
from bitrix_worker.redis.breaker import Breaker
from bitrix_worker.taxonomy import ErrorClass, Execution

LIFETIME_S = 1.0
HERE = Path(__file__).resolve().parent


@pytest.fixture
async def oauth_emulator() -> AsyncIterator[EmulatorServer]:
    cfg = EmulatorConfig(limits_enabled=False, oauth=OAuthConfig(access_lifetime_s=LIFETIME_S))
    async with EmulatorServer(cfg) as server:
        yield server


def registered(server: EmulatorServer, pid: str, *, refresh_token: str | None = None) -> PortalRecord:
    oauth = server.config.oauth
    assert oauth is not None
    return PortalRecord(
        pid,
        "oauth",
        f"{server.base_url}/rest/",
        client_id=oauth.client_id,
        client_secret=oauth.client_secret,
        tokens=OAuthTokens(oauth.access_token, refresh_token or oauth.refresh_token),
        token_url=f"{server.base_url}/oauth/token/",
    )


@pytest.fixture
async def portal_db(tmp_path: Path) -> AsyncIterator[tuple[str, str, str, PortalRegistry]]:
    """(database URL, table, secrets key, an open registry)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'portals.sqlite3'}"
    key = new_key()
    registry = await PortalRegistry.connect(url, box=SecretBox([key]))
    try:
        yield url, registry.table.name, key, registry
    finally:
        await registry.close()


def oauth_stats(server: EmulatorServer) -> dict[str, Any]:
    assert server.app.portal.oauth is not None
    return server.app.portal.oauth.snapshot()


async def test_one_refresh_per_expiry_across_four_processes(
    oauth_emulator: EmulatorServer,
    portal_db: tuple[str, str, str, PortalRegistry],
    redis_url: str,
) -> None:
    url, table, key, registry = portal_db
    pid = f"p-{uuid.uuid4().hex[:8]}"
    await registry.add(registered(oauth_emulator, pid))
    seconds = 6.0
    env = {**os.environ, "BITRIX_WORKER_SECRETS_KEY": key}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "oauth_load.py"),
            url,
            table,
            pid,
            redis_url,
            str(seconds),
            "4",
            stdout=subprocess.PIPE,
            env=env,
        )
        for _ in range(4)
    ]
    # the last line is the result; log lines of the process come before it
    results = [json.loads((await p.communicate())[0].decode().strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    stats = oauth_stats(oauth_emulator)
    assert [r["failed"] for r in results] == [0, 0, 0, 0], results
    assert all(r["ok"] > 0 for r in results)
    assert stats["invalid_grant"] == 0
    assert stats["early_refreshes"] == 0  # every refresh followed an expiry...
    assert stats["refreshes"] == sum(r["refreshes"] for r in results)  # ...and was made by one process
    assert stats["refreshes"] >= 3, stats  # tokens expired every second under load: several chain steps
    assert stats["expired"] >= stats["refreshes"]
    pair, state = await registry.tokens(pid)
    assert (pair.version, state) == (stats["refreshes"], "active")  # every refresh stored, none lost


async def test_tasks_of_one_process_share_one_refresh(
    oauth_emulator: EmulatorServer, portal_db: tuple[str, str, str, PortalRegistry], redis_url: str
) -> None:
    url, table, key, registry = portal_db
    pid = f"p-{uuid.uuid4().hex[:8]}"
    await registry.add(registered(oauth_emulator, pid))
    os.environ["BITRIX_WORKER_SECRETS_KEY"] = key
    try:
        results = await asyncio.gather(*(load(url, table, pid, redis_url, 2.5, 8) for _ in range(2)))
    finally:
        del os.environ["BITRIX_WORKER_SECRETS_KEY"]
    stats = oauth_stats(oauth_emulator)
    assert [r["failed"] for r in results] == [0, 0]
    assert stats["invalid_grant"] == 0
    assert stats["early_refreshes"] == 0
    assert stats["refreshes"] == sum(r["refreshes"] for r in results) >= 1


async def test_invalid_grant_marks_the_portal_auth_broken_and_pauses_it(
    oauth_emulator: EmulatorServer,
    portal_db: tuple[str, str, str, PortalRegistry],
    redis_client: Redis,
    key_prefix: str,
) -> None:
    _, _, _, registry = portal_db
    pid = f"p-{uuid.uuid4().hex[:8]}"
    await registry.add(registered(oauth_emulator, pid, refresh_token="a-refresh-token-nobody-issued"))
    breaker = Breaker(redis_client, f"{key_prefix}:breaker:{pid}", cooldown_s=5, max_cooldown_s=60)
    gate = PortalGate(Settings(), breaker)
    assert oauth_emulator.app.portal.oauth is not None
    oauth_emulator.app.portal.oauth.expire_now()
    record = await registry.get(pid)
    async with open_portal_client(
        record,
        registry=registry,
        redis=redis_client,
        on_broken=gate.pause,
        connect_timeout_s=2,
        read_timeout_s=5,
    ) as portal:
        with pytest.raises(AuthError) as caught:
            await portal.client.call("crm.deal.list")
        assert "auth_broken" in str(caught.value)
        assert "a-refresh-token-nobody-issued" not in str(caught.value)
        with pytest.raises(AuthError):
            await portal.client.call("crm.deal.list")  # no second refresh: the portal is known broken
    assert oauth_stats(oauth_emulator)["invalid_grant"] == 1
    stored = await registry.get(pid)
    assert stored.state == "auth_broken"
    assert "invalid_grant" in stored.state_reason
    state = await gate.state()
    assert state.open
    assert state.manual
    assert "invalid_grant" in state.reason


async def test_an_unreachable_token_endpoint_is_transient(
    oauth_emulator: EmulatorServer,
    portal_db: tuple[str, str, str, PortalRegistry],
    redis_client: Redis,
) -> None:
    _, _, _, registry = portal_db
    pid = f"p-{uuid.uuid4().hex[:8]}"
    record = registered(oauth_emulator, pid)
    record = dataclasses.replace(record, token_url="http://127.0.0.1:9/oauth/token/")
    await registry.add(record)
    assert oauth_emulator.app.portal.oauth is not None
    oauth_emulator.app.portal.oauth.expire_now()
    async with open_portal_client(
        await registry.get(pid), registry=registry, redis=redis_client, connect_timeout_s=2, read_timeout_s=5
    ) as portal:
        with pytest.raises(BitrixError) as caught:
            await portal.client.call("crm.deal.list")
    c = caught.value.classification
    assert (c.error_class, c.execution) == (ErrorClass.NETWORK, Execution.NOT_EXECUTED)
    assert (await registry.get(pid)).state == "active"  # not the portal's fault: nothing marked


async def test_a_portal_that_refuses_every_new_token_is_an_auth_failure_not_a_loop(
    portal_db: tuple[str, str, str, PortalRegistry], redis_client: Redis
) -> None:
    cfg = EmulatorConfig(limits_enabled=False, oauth=OAuthConfig(access_lifetime_s=1e-6))
    async with EmulatorServer(cfg) as server:
        _, _, _, registry = portal_db
        pid = f"p-{uuid.uuid4().hex[:8]}"
        await registry.add(registered(server, pid))
        async with open_portal_client(
            await registry.get(pid),
            registry=registry,
            redis=redis_client,
            connect_timeout_s=2,
            read_timeout_s=5,
        ) as portal:
            with pytest.raises(AuthError, match="expired_token"):
                await portal.client.call("crm.deal.list")
        stats = oauth_stats(server)
    assert stats["refreshes"] == 2  # two renewals, then the refusal is reported
    assert stats["invalid_grant"] == 0
    assert (await registry.get(pid)).state == "active"  # the tokens work; the portal's clock does not


async def test_the_access_token_goes_in_the_body_never_in_the_url(
    oauth_emulator: EmulatorServer, portal_db: tuple[str, str, str, PortalRegistry], redis_client: Redis
) -> None:
    _, _, _, registry = portal_db
    pid = f"p-{uuid.uuid4().hex[:8]}"
    await registry.add(registered(oauth_emulator, pid))
    async with open_portal_client(
        await registry.get(pid), registry=registry, redis=redis_client, connect_timeout_s=2, read_timeout_s=5
    ) as portal:
        assert portal.client.auth.method_url("crm.deal.add") == f"{oauth_emulator.base_url}/rest/crm.deal.add"
        new_id = await portal.client.add("deal", {"TITLE": "via OAuth"})
        assert (await portal.client.get("deal", new_id))["TITLE"] == "via OAuth"
        assert "emulator-access-0" not in repr(portal.client)


async def test_a_refresher_that_died_holding_the_lock_delays_but_does_not_block(
    oauth_emulator: EmulatorServer, portal_db: tuple[str, str, str, PortalRegistry], redis_client: Redis
) -> None:
    _, _, _, registry = portal_db
    pid = f"p-{uuid.uuid4().hex[:8]}"
    await registry.add(registered(oauth_emulator, pid))
    lock_key = oauth_refresh_key(pid)
    await redis_client.set(lock_key, "a-dead-process", px=1500)  # its holder died before refreshing
    assert oauth_emulator.app.portal.oauth is not None
    oauth_emulator.app.portal.oauth.expire_now()
    try:
        async with open_portal_client(
            await registry.get(pid),
            registry=registry,
            redis=redis_client,
            connect_timeout_s=2,
            read_timeout_s=5,
        ) as portal:
            started = time.monotonic()
            await asyncio.gather(*(portal.client.call("crm.deal.list") for _ in range(5)))
            waited = time.monotonic() - started
    finally:
        await redis_client.delete(lock_key)
    assert 1.0 <= waited < 10  # nobody refreshed while the dead holder's lock lived
    assert oauth_stats(oauth_emulator)["refreshes"] == 1


async def test_portals_refresh_keeps_an_idle_chain_alive_without_breaking_running_clients(
    oauth_emulator: EmulatorServer,
    portal_db: tuple[str, str, str, PortalRegistry],
    redis_client: Redis,
    redis_url: str,
) -> None:
    url, table, key, registry = portal_db
    pid = f"p-{uuid.uuid4().hex[:8]}"
    await registry.add(registered(oauth_emulator, pid))
    env = {"REDIS_URL": redis_url, "DATABASE_URL": url, "BITRIX_WORKER_SECRETS_KEY": key}
    env["BITRIX_WORKER_PORTALS_TABLE"] = table
    async with open_portal_client(
        await registry.get(pid), registry=registry, redis=redis_client, connect_timeout_s=2, read_timeout_s=5
    ) as portal:
        await portal.client.call("crm.deal.list")  # holds the first access token
        result = await asyncio.to_thread(
            CliRunner().invoke, app, ["portals", "refresh", pid, "--json"], env=env
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == [{"portal": pid, "result": "refreshed", "token_version": 1}]
        await portal.client.call("crm.deal.list")  # its token was killed: it re-reads, no second refresh
    stats = oauth_stats(oauth_emulator)
    assert stats["refreshes"] == 1
    assert stats["invalid_grant"] == 0
    none = await asyncio.to_thread(CliRunner().invoke, app, ["portals", "refresh"], env=env)
    assert none.exit_code == 2
    assert "give a portal id or --all" in none.output
