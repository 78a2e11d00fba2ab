"""Settings of the registry and OAuth: the default portal's name, the install callback's requirements, and
secrets that never show in ``config``."""

from __future__ import annotations

import pytest

from bitrix_worker.config import load_settings
from bitrix_worker.errors import ConfigError

WEBHOOK = "https://w1.bitrix24.com/rest/1/webhooksecret0123/"


def test_the_default_portal_is_named_by_the_registry_id_else_the_webhook_host() -> None:
    assert load_settings(webhook_url=WEBHOOK).portal_name == "w1.bitrix24.com"
    assert load_settings(webhook_url=WEBHOOK, portal="p1.bitrix24.com").portal_name == "p1.bitrix24.com"
    assert load_settings(portal="p1").portal_name == "p1"
    with pytest.raises(ConfigError, match="BITRIX_WORKER_PORTAL"):
        load_settings(webhook_url="").portal_name  # noqa: B018


def test_the_install_callback_needs_its_token_client_and_port() -> None:
    with pytest.raises(ConfigError, match="INSTALL_APPLICATION_TOKEN"):
        load_settings(install_enabled=True, http_port=9400)
    with pytest.raises(ConfigError, match="HTTP_PORT"):
        load_settings(
            install_enabled=True,
            http_port=0,
            install_application_token="t",
            oauth_client_id="c",
            oauth_client_secret="s",
        )
    ok = load_settings(
        install_enabled=True,
        http_port=9400,
        install_application_token="t-0123456789",
        oauth_client_id="c",
        oauth_client_secret="s-0123456789",
        secrets_key="k-0123456789",
    )
    shown = str(ok.redacted())
    for secret in ("t-0123456789", "s-0123456789", "k-0123456789"):
        assert secret not in shown
