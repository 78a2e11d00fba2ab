"""The one configuration object: frozen, validated at start, read from env / ``.env`` / CLI flags.

Environment names: ``BITRIX_WEBHOOK_URL``, ``REDIS_URL`` and ``DATABASE_URL`` as they are; everything
else ``BITRIX_WORKER_<FIELD>``. A bad value stops the start with a ``ConfigError`` that names the
environment variable, so the operator knows what to fix: a one-line message, URLs shown with their secrets
masked (``redaction.redact_url``). Floats must be finite (``inf``/``nan`` are refused everywhere), and the
URLs are checked strictly (``urls.py``): a Redis path that is not a database number, a port that is not
1-65535 or a host with a space never passes.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import defaults as d
from .errors import ConfigError
from .redaction import WebhookUrl, redact_url
from .taxonomy import ErrorClass
from .urls import check_database_url, check_host, check_redis_url
from .validation import DEFAULT_ACTIONS, FindingAction, FindingKind

ENV_PREFIX = "BITRIX_WORKER_"
_PLAIN_ENV = {
    "webhook_url": "BITRIX_WEBHOOK_URL",
    "redis_url": "REDIS_URL",
    "database_url": "DATABASE_URL",
}


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        validate_default=True,
        allow_inf_nan=False,
    )

    webhook_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("BITRIX_WEBHOOK_URL", "webhook_url")
    )
    redis_url: str = Field(default=d.REDIS_URL, validation_alias=AliasChoices("REDIS_URL", "redis_url"))
    database_url: str = Field(
        default_factory=d.database_url, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )

    stream: str = Field(default=d.STREAM, min_length=1)
    group: str = Field(default=d.GROUP, min_length=1)
    dead_stream: str = Field(default=d.DEAD_STREAM, min_length=1)
    consumer: str = Field(default_factory=_default_consumer, min_length=1)
    originator_id: str = Field(default=d.ORIGINATOR_ID, min_length=1, max_length=100)
    recreate_deleted: bool = False

    backoff_base_s: float = Field(default=d.BACKOFF_BASE_S, gt=0)
    backoff_max_s: float = Field(default=d.BACKOFF_MAX_S, gt=0)
    rate_limit_backoff_base_s: float = Field(default=d.RATE_LIMIT_BACKOFF_BASE_S, gt=0)

    retries_not_found_update: int = Field(default=d.RETRIES_NOT_FOUND_UPDATE, ge=0, le=100)
    retries_not_found_create: int = Field(default=d.RETRIES_NOT_FOUND_CREATE, ge=0, le=100)
    retries_invalid_data: int = Field(default=d.RETRIES_INVALID_DATA, ge=0, le=100)
    retries_auth: int = Field(default=d.RETRIES_AUTH, ge=0, le=100)
    retries_server_error: int = Field(default=d.RETRIES_SERVER_ERROR, ge=0, le=100)
    retries_network: int = Field(default=d.RETRIES_NETWORK, ge=0, le=100)
    retries_rate_limited: int = Field(default=d.RETRIES_RATE_LIMITED, ge=0, le=1000)
    retries_method_limited: int = Field(default=d.RETRIES_METHOD_LIMITED, ge=0, le=1000)

    concurrency: int = Field(default=d.CONCURRENCY, ge=1, le=256)
    batch_size: int = Field(default=d.BATCH_SIZE, ge=1, le=50)
    block_ms: int = Field(default=d.BLOCK_MS, ge=10, le=60_000)
    claim_idle_ms: int = Field(default=d.CLAIM_IDLE_MS, ge=100)
    tail_linger_s: float = Field(default=d.TAIL_LINGER_S, ge=0, le=60)
    max_deliveries: int = Field(default=d.MAX_DELIVERIES, ge=1, le=1000)

    rate_burst: int = Field(default=d.RATE_BURST, ge=1)
    rate_per_s: float = Field(default=d.RATE_PER_S, gt=0)
    rate_safety: float = Field(default=d.RATE_SAFETY, gt=0, le=1)
    rate_share: float = Field(default=d.RATE_SHARE, gt=0, le=1)
    operating_budget_s: float = Field(default=d.OPERATING_BUDGET_S, gt=0)
    operating_safety: float = Field(default=d.OPERATING_SAFETY, gt=0, le=1)

    breaker_cooldown_s: float = Field(default=d.BREAKER_COOLDOWN_S, gt=0)
    breaker_max_cooldown_s: float = Field(default=d.BREAKER_MAX_COOLDOWN_S, gt=0)
    blocked_cooldown_s: float = Field(default=d.BLOCKED_COOLDOWN_S, gt=0)
    portal_failure_threshold: int = Field(default=d.PORTAL_FAILURE_THRESHOLD, ge=1)

    connect_timeout_s: float = Field(default=d.CONNECT_TIMEOUT_S, gt=0)
    read_timeout_s: float = Field(default=d.READ_TIMEOUT_S, gt=0)
    portal_request_timeout_s: float = Field(default=d.PORTAL_REQUEST_TIMEOUT_S, ge=0)
    request_deadline_s: float = Field(default=d.REQUEST_DEADLINE_S, gt=0)
    max_response_bytes: int = Field(default=d.MAX_RESPONSE_BYTES, ge=1024)
    shutdown_grace_s: float = Field(default=d.SHUTDOWN_GRACE_S, ge=0)
    stall_after_s: float = Field(default=d.STALL_AFTER_S, gt=0, allow_inf_nan=False)
    http_port: int = Field(default=d.HTTP_PORT, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    metrics_portals: int = Field(default=d.METRICS_PORTALS, ge=1, le=10_000)
    outcomes_maxlen: int = Field(default=d.OUTCOMES_MAXLEN, ge=0)
    schema_ttl_s: float = Field(default=d.SCHEMA_TTL_S, gt=0)
    schema_refresh_min_s: float = Field(default=d.SCHEMA_REFRESH_MIN_S, ge=0)
    validate_fields: bool = True
    on_unknown_field: FindingAction = DEFAULT_ACTIONS[FindingKind.UNKNOWN_FIELD]
    on_read_only: FindingAction = DEFAULT_ACTIONS[FindingKind.READ_ONLY]
    on_immutable: FindingAction = DEFAULT_ACTIONS[FindingKind.IMMUTABLE]
    on_required_missing: FindingAction = DEFAULT_ACTIONS[FindingKind.REQUIRED_MISSING]
    on_wrong_type: FindingAction = DEFAULT_ACTIONS[FindingKind.WRONG_TYPE]
    on_not_in_list: FindingAction = DEFAULT_ACTIONS[FindingKind.NOT_IN_LIST]
    on_not_multiple: FindingAction = DEFAULT_ACTIONS[FindingKind.NOT_MULTIPLE]
    on_multifield_delete: FindingAction = DEFAULT_ACTIONS[FindingKind.MULTIFIELD_DELETE]
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=d.DASHBOARD_PORT, ge=0, le=65535)
    dashboard_read_only: bool = False
    dashboard_token: SecretStr | None = None
    dashboard_user: str | None = None
    dashboard_password: SecretStr | None = None
    dashboard_refresh_s: float = Field(default=d.DASHBOARD_REFRESH_S, ge=0.5, le=3600)
    dashboard_scan_cap: int = Field(default=d.DASHBOARD_SCAN_CAP, ge=100)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_successes: bool = True
    # the portal registry (docs/portals.md)
    portal: str | None = Field(
        default=None, min_length=1, max_length=200
    )  # registry id of the default portal
    portals: str | None = Field(
        default=None,
        pattern=r"^(all|[A-Za-z0-9][A-Za-z0-9._:-]{0,199}(,[A-Za-z0-9][A-Za-z0-9._:-]{0,199})*)$",
    )  # multi-portal worker: all | id,id
    portal_busy_after_s: float = Field(default=d.PORTAL_BUSY_AFTER_S, ge=0, allow_inf_nan=False)
    portal_quiet_after_s: float = Field(default=d.PORTAL_QUIET_AFTER_S, ge=0, allow_inf_nan=False)
    secrets_key: SecretStr | None = None  # Fernet keys, newest first, comma-separated
    portals_table: str = Field(default="bitrix_portals", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    install_enabled: bool = False  # POST /install on the HTTP port registers a portal (ONAPPINSTALL)
    install_application_token: SecretStr | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None

    @field_validator("webhook_url")
    @classmethod
    def _webhook_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            WebhookUrl.parse(value.get_secret_value())
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_shape(cls, value: str) -> str:
        return check_redis_url(value)

    @field_validator("http_host")
    @classmethod
    def _bindable_host(cls, value: str) -> str:
        return check_host(value)

    @field_validator("database_url")
    @classmethod
    def _database_driver(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        elif value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value.split(":///", 1)[1]
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:///path or postgresql://user@host/db")
        return check_database_url(value)

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be >= backoff_base_s")
        if self.stream == self.dead_stream:
            raise ValueError("dead_stream must differ from stream")
        if self.install_enabled and not self.http_port:
            raise ValueError(
                "BITRIX_WORKER_INSTALL_ENABLED needs BITRIX_WORKER_HTTP_PORT (it is served there)"
            )
        if self.install_enabled and not (
            self.install_application_token and self.oauth_client_id and self.oauth_client_secret
        ):
            raise ValueError(
                "BITRIX_WORKER_INSTALL_ENABLED needs BITRIX_WORKER_INSTALL_APPLICATION_TOKEN, "
                "BITRIX_WORKER_OAUTH_CLIENT_ID and BITRIX_WORKER_OAUTH_CLIENT_SECRET"
            )
        if (self.dashboard_user is None) != (self.dashboard_password is None):
            raise ValueError(
                "set both BITRIX_WORKER_DASHBOARD_USER and BITRIX_WORKER_DASHBOARD_PASSWORD, or neither"
            )
        return self

    @property
    def webhook(self) -> WebhookUrl:
        if self.webhook_url is None or not self.webhook_url.get_secret_value():
            raise ConfigError("BITRIX_WEBHOOK_URL", "is required (https://<portal>/rest/<user>/<secret>/)")
        return WebhookUrl.parse(self.webhook_url.get_secret_value())

    @property
    def portal_name(self) -> str:
        """The default portal's name, which its Redis keys (limiter, gate, pauses) carry: the registry id
        given in ``BITRIX_WORKER_PORTAL``, else the webhook's host."""
        if self.portal:
            return self.portal
        if self.webhook_url is None or not self.webhook_url.get_secret_value():
            raise ConfigError(
                "BITRIX_WEBHOOK_URL",
                "is required (https://<portal>/rest/<user>/<secret>/), or BITRIX_WORKER_PORTAL naming a "
                "registered portal",
            )
        return self.webhook.portal

    @property
    def default_portal(self) -> str | None:
        """The portal whose operations stay on ``stream`` itself (``portal_name``), None when none is set."""
        return self.portal_name if (self.portal or self.webhook_url) else None

    @property
    def portal_ids(self) -> frozenset[str] | None:
        """The registry portals a multi-portal worker serves (``BITRIX_WORKER_PORTALS``): None for all."""
        if self.portals in (None, "all"):
            return None
        return frozenset(self.portals.split(","))

    @property
    def rate_fraction(self) -> float:
        """Fraction of the portal's rate and burst the shared limiter allows all workers together.

        ``rate_safety`` keeps the workers just below the portal's ceiling; ``rate_share`` leaves the rest of
        the budget to other applications that call the same portal (docs/benchmarks.md, "Sharing").
        """
        return self.rate_safety * self.rate_share

    @property
    def limiter_burst(self) -> int:
        """The burst the shared limiter allows (before ``rate_fraction``): the portal's bucket less one second
        of its drain. Bitrix24 drains the counter once per second, not continuously, so right after a burst
        the counter can stand up to one second's drain higher than a continuous model says; a full bucket
        less that never meets a refusal in either model (docs/benchmarks.md, "The portal's shape")."""
        return max(1, self.rate_burst - math.ceil(self.rate_per_s))

    @property
    def heartbeat_interval_s(self) -> float:
        """How often a worker says it is alive and keeps its entries fresh: a third of the reclaim idle time,
        so a live worker's entries are never taken for a dead one's; ``status`` counts it live for three."""
        return max(0.05, self.claim_idle_ms / 3000)

    @property
    def keys(self) -> d.StreamKeys:
        return d.StreamKeys(stream=self.stream, dead=self.dead_stream)

    def retry_budget(self, error_class: ErrorClass, *, creating: bool) -> int:
        """Retries allowed after the first attempt for one class (docs/errors.md)."""
        budgets = {
            ErrorClass.NOT_FOUND: (
                self.retries_not_found_create if creating else self.retries_not_found_update
            ),
            ErrorClass.INVALID_DATA: self.retries_invalid_data,
            ErrorClass.AUTH: self.retries_auth,
            ErrorClass.SERVER_ERROR: self.retries_server_error,
            ErrorClass.NETWORK: self.retries_network,
            ErrorClass.RATE_LIMITED: self.retries_rate_limited,
            ErrorClass.METHOD_LIMITED: self.retries_method_limited,
            ErrorClass.BLOCKED: self.retries_rate_limited,
            ErrorClass.POISON: 0,
        }
        return budgets[error_class]

    def finding_actions(self) -> dict[FindingKind, FindingAction]:
        """What to do with each kind of validation finding (``BITRIX_WORKER_ON_<KIND>``)."""
        return {kind: getattr(self, f"on_{kind.value}") for kind in FindingKind}

    def redacted(self) -> dict[str, Any]:
        """Effective settings for display: every URL through ``redact_url`` (webhook secret, passwords,
        tokens masked; host and path kept, so a typo can be seen)."""
        data = self.model_dump()
        webhook = self.webhook_url.get_secret_value() if self.webhook_url else ""
        data["webhook_url"] = redact_url(webhook) if webhook else None
        data["redis_url"] = redact_url(self.redis_url)
        data["database_url"] = redact_url(self.database_url)
        return data


def env_name(field: str) -> str:
    return _PLAIN_ENV.get(field, ENV_PREFIX + field.upper())


def load_settings(**overrides: Any) -> Settings:
    """Build settings from env/.env plus explicit overrides; ConfigError names the bad setting."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = [str(p) for p in err["loc"]]
        field = loc[0] if loc else "settings"
        for name, env in _PLAIN_ENV.items():
            if field == env:
                field = name
        message = " ".join(err["msg"].removeprefix("Value error, ").split())  # always one line
        raise ConfigError(env_name(field) if loc else "settings", message) from None
