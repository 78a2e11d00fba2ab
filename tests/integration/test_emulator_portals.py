"""Several emulated portals in one process: each at its own loopback address, with its own limits, store,
webhook and OAuth tokens; nothing of one leaks into another."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bitrix_worker.emulator import EmulatorConfig
from bitrix_worker.emulator.multi import MultiPortalServer
from bitrix_worker.emulator.oauth import OAuthConfig

A, B, C = "127.0.0.2", "127.0.0.3", "127.0.0.4"


@pytest.fixture
async def portals() -> AsyncIterator[MultiPortalServer]:
    configs = {
        A: EmulatorConfig(
            burst=2, drain_per_s=0.01, oauth=OAuthConfig(access_token="a-access", refresh_token="a-ref")
        ),
        B: EmulatorConfig(
            oauth=OAuthConfig(access_token="b-access", refresh_token="b-ref", access_lifetime_s=1e-6)
        ),
        C: EmulatorConfig(secret="c-secret"),
    }
    async with MultiPortalServer(configs) as server:
        yield server


async def test_each_portal_has_its_own_store_limits_and_tokens(portals: MultiPortalServer) -> None:
    async with httpx.AsyncClient() as http:
        a, b = portals.base_url(A), portals.base_url(B)
        added = await http.post(f"{a}/rest/crm.deal.add", json={"auth": "a-access", "fields": {"TITLE": "A"}})
        assert added.status_code == 200, added.text
        assert (await http.post(f"{portals.webhook_url(C)}crm.deal.list", json={})).json()["result"] == []

        # A's token means nothing at B, and B's tokens expire at once while A's live on
        wrong = await http.post(f"{b}/rest/crm.deal.list", json={"auth": "a-access"})
        assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_token")
        expired = await http.post(f"{b}/rest/crm.deal.list", json={"auth": "b-access"})
        assert (expired.status_code, expired.json()["error"]) == (401, "expired_token")

        # A's bucket (burst 2) is full after two requests; B and C are untouched
        assert (await http.post(f"{a}/rest/crm.deal.list", json={"auth": "a-access"})).status_code == 200
        third = await http.post(f"{a}/rest/crm.deal.list", json={"auth": "a-access"})
        assert third.json()["error"] == "QUERY_LIMIT_EXCEEDED"
        assert (await http.post(f"{portals.webhook_url(C)}crm.deal.list", json={})).status_code == 200

        # a refresh at B rotates B's chain only; reusing B's old refresh token is invalid_grant
        form = {"grant_type": "refresh_token", "client_id": "local.emulator.app"}
        form |= {"client_secret": "emulator-client-secret", "refresh_token": "b-ref"}
        fresh = await http.post(f"{b}/oauth/token/", data=form)
        assert fresh.status_code == 200
        assert fresh.json()["client_endpoint"] == f"{b}/rest/"
        again = await http.post(f"{b}/oauth/token/", data=form)
        assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
        assert (await http.get(f"{a}/_emulator/oauth")).json()["refreshes"] == 0
        assert (await http.get(f"{b}/_emulator/oauth")).json()["invalid_grant"] == 1

    assert len(portals.apps[A].portal.store.all("deal")) == 1
    assert portals.apps[B].portal.store.all("deal") == []
    assert portals.apps[C].portal.store.all("deal") == []
