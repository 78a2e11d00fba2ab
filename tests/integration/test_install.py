"""The install callback (``POST /install``): a verified ``ONAPPINSTALL`` registers the portal with its
tokens (encrypted); anything unverified is a bare 401 and registers nothing. Served over loopback HTTP by the
worker's own HTTP server class."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from bitrix_worker.monitoring import HttpServer
from bitrix_worker.portals.install import InstallRefused, install_route, parse_install
from bitrix_worker.portals.model import PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key

APP_TOKEN = "app-token-0123456789abcdef"
FORM = {
    "event": "ONAPPINSTALL",
    "data[VERSION]": "1",
    "auth[domain]": "p9.bitrix24.com",
    "auth[access_token]": "access-0123456789",
    "auth[refresh_token]": "refresh-0123456789",
    "auth[expires_in]": "3600",
    "auth[client_endpoint]": "https://p9.bitrix24.com/rest/",
    "auth[server_endpoint]": "https://oauth.bitrix.info/rest/",
    "auth[member_id]": "member-9",
    "auth[application_token]": APP_TOKEN,
}


def parse(form: dict[str, str]) -> PortalRecord:
    return parse_install(
        form, application_token=APP_TOKEN, client_id="app.1", client_secret="cs-0123456789", now=1000
    )


def test_parse_a_verified_install() -> None:
    record = parse(FORM)
    assert (record.portal_id, record.auth, record.endpoint) == (
        "p9.bitrix24.com",
        "oauth",
        FORM["auth[client_endpoint]"],
    )
    assert record.token_url == "https://oauth.bitrix.info/oauth/token/"
    assert record.tokens is not None
    assert (record.tokens.access_token, record.tokens.refresh_token, record.tokens.expires_at) == (
        "access-0123456789",
        "refresh-0123456789",
        4600,
    )
    assert (record.member_id, record.client_id, record.application_token) == ("member-9", "app.1", APP_TOKEN)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"auth[application_token]": "wrong"}, 401),
        ({"auth[application_token]": ""}, 401),
        ({"event": "ONAPPUNINSTALL"}, 400),
        ({"auth[domain]": "bad domain"}, 400),
        ({"auth[refresh_token]": ""}, 400),
    ],
)
def test_parse_refuses(change: dict[str, str], status: int) -> None:
    with pytest.raises(InstallRefused) as caught:
        parse({**FORM, **change})
    assert caught.value.status == status


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, PortalRegistry]]:
    registry = await PortalRegistry.connect(
        f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}", box=SecretBox([new_key()])
    )
    route = install_route(
        registry, application_token=APP_TOKEN, client_id="app.1", client_secret="cs-0123456789"
    )
    server = HttpServer(Starlette(routes=[route]), "127.0.0.1", 0)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}/install", registry
    finally:
        await server.stop()
        await registry.close()


async def test_install_over_http_registers_the_portal(served: tuple[str, PortalRegistry]) -> None:
    url, registry = served
    async with httpx.AsyncClient() as http:
        refused = await http.post(url, data={**FORM, "auth[application_token]": "forged"})
        assert refused.status_code == 401
        assert refused.json() == {"error": "forbidden"}
        assert await registry.records() == []
        answer = await http.post(url, data=FORM)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True, "portal": "p9.bitrix24.com"}
    stored = await registry.get("p9.bitrix24.com")
    assert stored.state == "active"
    assert stored.tokens is not None
    assert stored.tokens.refresh_token == "refresh-0123456789"


async def test_a_reinstall_repairs_an_auth_broken_portal(served: tuple[str, PortalRegistry]) -> None:
    url, registry = served
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, data=FORM)).status_code == 200
        await registry.set_state("p9.bitrix24.com", "auth_broken", "invalid_grant")
        again = await http.post(url, data={**FORM, "auth[refresh_token]": "refresh-new-0123456789"})
    assert again.status_code == 200
    stored = await registry.get("p9.bitrix24.com")
    assert stored.state == "active"
    assert stored.tokens is not None
    assert stored.tokens.refresh_token == "refresh-new-0123456789"
