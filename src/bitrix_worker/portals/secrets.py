"""The registry's secrets, encrypted at rest with keys from the environment (``cryptography``'s Fernet).

``BITRIX_WORKER_SECRETS_KEY`` holds one or more Fernet keys separated by commas, **newest first**. The newest
encrypts; every key decrypts (``MultiFernet``), so a key is rotated without downtime:

1. put a new key in front (``new,old``) and restart: new writes use it, old rows still read;
2. ``bitrix-worker portals rotate-secrets`` re-encrypts every row with the newest key;
3. drop the old key from the setting.

A Fernet token is authenticated (AES-128-CBC + HMAC-SHA256): a row changed in the database, or encrypted
with a key not in the setting, is refused with a ``RegistryError`` that names the setting, never
decrypted into garbage. Keys and plaintexts never appear in messages.

``cryptography`` is imported when a box is made, not with this module: its OpenSSL bindings are ~6.5 MB of
resident memory that a worker with one webhook (no registry secrets) never needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError, RegistryError

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = ["SECRETS_KEY_ENV", "SecretBox", "new_key"]

SECRETS_KEY_ENV = "BITRIX_WORKER_SECRETS_KEY"


def new_key() -> str:
    """A fresh random key (url-safe base64 of 32 bytes), as ``portals new-key`` prints it."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


class SecretBox:
    """Encrypts with the newest key, decrypts with any; see the module docstring for rotation."""

    def __init__(self, keys: list[str]) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        if not keys:
            raise ConfigError(
                SECRETS_KEY_ENV,
                "is required to store or read portal secrets (generate one: bitrix-worker portals new-key)",
            )
        fernets = []
        for n, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key.encode()))
            except (ValueError, TypeError):
                raise ConfigError(
                    SECRETS_KEY_ENV,
                    f"key #{n} is not a Fernet key (32 url-safe base64-encoded bytes; "
                    "generate one: bitrix-worker portals new-key)",
                ) from None
        self._box: MultiFernet = MultiFernet(fernets)
        self.keys = len(fernets)

    @classmethod
    def from_setting(cls, value: str | None) -> SecretBox:
        """From the setting's text: ``newest,older,...`` (spaces around commas are ignored)."""
        return cls([k.strip() for k in (value or "").split(",") if k.strip()])

    def __repr__(self) -> str:
        return f"SecretBox(keys={self.keys})"

    def encrypt(self, plaintext: str) -> str:
        return self._box.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str, *, what: str = "a secret") -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._box.decrypt(token.encode()).decode()
        except InvalidToken:
            raise RegistryError(
                f"{what} cannot be decrypted with any key in {SECRETS_KEY_ENV} "
                "(a key was dropped before rotate-secrets ran, or the row was altered)"
            ) from None

    def rotate(self, token: str, *, what: str = "a secret") -> str:
        """The same secret encrypted with the newest key."""
        from cryptography.fernet import InvalidToken

        try:
            return self._box.rotate(token.encode()).decode()
        except InvalidToken:
            raise RegistryError(
                f"{what} cannot be decrypted with any key in {SECRETS_KEY_ENV}, so it cannot be rotated"
            ) from None
