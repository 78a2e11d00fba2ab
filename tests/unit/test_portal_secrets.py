"""Secrets at rest: Fernet round trips, key rotation with MultiFernet, clear errors naming the setting, and
records that never print a secret."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from bitrix_worker.errors import ConfigError, RegistryError
from bitrix_worker.portals.model import OAuthTokens, PortalRecord, check_portal_id, fingerprint
from bitrix_worker.portals.secrets import SECRETS_KEY_ENV, SecretBox, new_key

SECRET = "refresh-0123456789abcdef"


def test_round_trip_and_ciphertext_hides_the_secret() -> None:
    box = SecretBox([new_key()])
    token = box.encrypt(SECRET)
    assert SECRET not in token
    assert box.encrypt(SECRET) != token  # a fresh IV each time: equal secrets do not look equal
    assert box.decrypt(token) == SECRET


def test_rotation_keeps_old_rows_readable_then_drops_the_old_key() -> None:
    old, new = new_key(), new_key()
    stored = SecretBox([old]).encrypt(SECRET)
    both = SecretBox.from_setting(f"{new}, {old}")
    assert both.decrypt(stored) == SECRET  # step 1: new key in front, old rows still read
    rotated = both.rotate(stored)  # step 2: rewrite with the newest key
    assert Fernet(new.encode()).decrypt(rotated.encode()).decode() == SECRET
    assert SecretBox([new]).decrypt(rotated) == SECRET  # step 3: the old key can go
    with pytest.raises(RegistryError, match=SECRETS_KEY_ENV) as caught:
        SecretBox([new]).decrypt(stored, what="the refresh token of p1")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("setting", ["", " , ", None])
def test_a_missing_key_names_the_setting(setting: str | None) -> None:
    with pytest.raises(ConfigError, match=SECRETS_KEY_ENV):
        SecretBox.from_setting(setting)


def test_a_bad_key_names_the_setting_and_its_position_not_its_value() -> None:
    with pytest.raises(ConfigError, match=r"key #2 is not a Fernet key") as caught:
        SecretBox.from_setting(f"{new_key()},not-a-key-value")
    assert "not-a-key-value" not in str(caught.value)
    assert caught.value.setting == SECRETS_KEY_ENV


def test_box_repr_shows_no_key() -> None:
    key = new_key()
    assert key not in repr(SecretBox([key]))


def test_records_never_print_secrets() -> None:
    record = PortalRecord(
        "p1.bitrix24.com",
        "oauth",
        "https://p1.bitrix24.com/rest/",
        client_id="app.1",
        client_secret="client-secret-0123456789",
        tokens=OAuthTokens("access-0123456789", SECRET, 1, 3),
        application_token="app-token-0123456789",
    )
    shown = f"{record!r} {record} {record.public()} {record.tokens!r}"
    for secret in ("client-secret-0123456789", "access-0123456789", SECRET, "app-token-0123456789"):
        assert secret not in shown
    assert record.public()["refresh_token"] == f"set (sha256:{fingerprint(SECRET)})"
    assert record.public()["webhook_url"] is None


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "-x", "x" * 201])
def test_portal_ids_are_short_names(bad: str) -> None:
    with pytest.raises(ValueError, match="portal id"):
        check_portal_id(bad)


def test_portal_ids_accept_domains_and_member_ids() -> None:
    for good in ("p1.bitrix24.com", "a1b2c3d4e5", "portal:eu_1"):
        assert check_portal_id(good) == good


def test_a_worker_without_registry_secrets_does_not_load_openssl() -> None:
    """cryptography's OpenSSL bindings are ~6.5 MB resident: loaded when a SecretBox is made, not before."""
    import subprocess
    import sys

    code = (
        "import sys, bitrix_worker.cli, bitrix_worker.runner, bitrix_worker.worker, bitrix_worker.fleet\n"
        "print(any('openssl' in m for m in sys.modules))\n"
        "from bitrix_worker.portals.secrets import SecretBox, new_key\n"
        "SecretBox([new_key()])\n"
        "print(any('openssl' in m for m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]
