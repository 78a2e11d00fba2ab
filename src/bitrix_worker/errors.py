"""One exception tree for the whole package, split by how the caller handles each branch.

    BitrixWorkerError                  root: `except BitrixWorkerError` catches everything we raise
    ├── ConfigError                    bad setting; names the setting; fatal at start
    ├── PoisonMessage                  a stream entry that can never be processed; dead-lettered
    ├── BitrixError                    one classified Bitrix24 failure (carries a Classification)
    │   ├── PermanentBitrixError       not_found, invalid_data (and poison): retrying cannot help
    │   ├── AuthError                  auth: a configuration problem; shuts the portal gate
    │   ├── LimitError                 rate_limited, method_limited, blocked: wait, never spend budget
    │   └── TransientBitrixError       server_error, network: retry with backoff
    ├── StoreError                     Redis or the mapping store failed (translated once, in
    │   │                              redis/errors.py and mapping.py; the loop retries)
    │   └── NotReplicated              a producer's entry is on the primary, not yet on the replicas asked
    ├── EmulatorError                  misuse of the Bitrix24 emulator's admin API
    ├── RegistryError                  a portal registry request that cannot be done (unknown or
    │                                  duplicate portal, a secret no configured key decrypts)
    ├── TokenRefreshError              the OAuth token endpoint refused (``permanent``: invalid_grant,
    │                                  invalid_client) or could not be reached (transient)
    └── MissingExtra                   a feature needs an optional extra that is not installed

Pure builders and parsers (``bitrix.methods``) raise ``ValueError`` for shapes Bitrix24 never sends; the
client turns those into a classified BitrixError. The emulator's own ``ApiError`` never leaves it: it is
the error answer it sends. Messages never contain the webhook secret: they are built from redacted parts.
"""

from __future__ import annotations

from .taxonomy import Classification, ErrorClass


class BitrixWorkerError(Exception):
    """Root of every exception raised by bitrix_worker."""


class ConfigError(BitrixWorkerError):
    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


class PoisonMessage(BitrixWorkerError):
    """The payload is malformed; ``reason`` is what a producer needs to fix it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BitrixError(BitrixWorkerError):
    def __init__(self, classification: Classification, method: str) -> None:
        self.classification = classification
        self.method = method
        c = classification
        detail = f"{c.error_class.value} ({c.execution.value})"
        status = f" HTTP {c.http_status}" if c.http_status is not None else ""
        code = f" {c.bitrix_code}" if c.bitrix_code else ""
        desc = f": {c.description}" if c.description else ""
        super().__init__(f"{method}: {detail}{status}{code}{desc}")

    @staticmethod
    def for_classification(classification: Classification, method: str) -> BitrixError:
        """The subclass that matches how this class is handled."""
        kind = _BY_CLASS.get(classification.error_class, TransientBitrixError)
        return kind(classification, method)


class PermanentBitrixError(BitrixError):
    pass


class AuthError(BitrixError):
    pass


class LimitError(BitrixError):
    pass


class TransientBitrixError(BitrixError):
    pass


class StoreError(BitrixWorkerError):
    pass


class RegistryError(BitrixWorkerError):
    """The portal registry refused a request; the message is one line for an operator, without secrets."""


class NotReplicated(StoreError):
    """``enqueue(..., replicas=n)``: the primary has the entry, fewer than n replicas confirmed it in time."""


class EmulatorError(BitrixWorkerError):
    pass


class MissingExtra(BitrixWorkerError):
    """A feature's optional dependencies are not installed; the message names the pip command."""

    def __init__(self, feature: str, extra: str) -> None:
        self.feature = feature
        self.extra = extra
        super().__init__(f"{feature} needs the [{extra}] extra: pip install 'bitrix-worker[{extra}]'")


_BY_CLASS: dict[ErrorClass, type[BitrixError]] = {
    ErrorClass.NOT_FOUND: PermanentBitrixError,
    ErrorClass.INVALID_DATA: PermanentBitrixError,
    ErrorClass.POISON: PermanentBitrixError,
    ErrorClass.AUTH: AuthError,
    ErrorClass.RATE_LIMITED: LimitError,
    ErrorClass.METHOD_LIMITED: LimitError,
    ErrorClass.BLOCKED: LimitError,
    ErrorClass.SERVER_ERROR: TransientBitrixError,
    ErrorClass.NETWORK: TransientBitrixError,
}


class TokenRefreshError(BitrixWorkerError):
    """A refresh of an OAuth pair failed. ``permanent`` when the OAuth server refused the grant or the client
    (``invalid_grant``: the refresh token is dead; only a new install repairs it); transient otherwise."""

    def __init__(self, code: str, description: str, *, permanent: bool) -> None:
        self.code = code
        self.description = description
        self.permanent = permanent
        super().__init__(f"token refresh failed: {code}: {description}" if description else code)
