from __future__ import annotations

import pytest

from bitrix_worker.config import Settings, env_name, load_settings
from bitrix_worker.errors import ConfigError
from bitrix_worker.taxonomy import ErrorClass

SECRET = "s3cr3t-token-value"
URL = f"https://portal.bitrix24.ru/rest/7/{SECRET}/"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults are what the code says, not what `make test` or the shell exported."""
    for name in ("BITRIX_WEBHOOK_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_taxonomy() -> None:
    s = load_settings(webhook_url=URL)
    assert s.retry_budget(ErrorClass.NOT_FOUND, creating=False) == 0
    assert s.retry_budget(ErrorClass.NOT_FOUND, creating=True) == 1
    assert s.retry_budget(ErrorClass.INVALID_DATA, creating=False) == 1
    assert s.retry_budget(ErrorClass.AUTH, creating=False) == 1
    assert s.retry_budget(ErrorClass.SERVER_ERROR, creating=False) == 5
    assert s.retry_budget(ErrorClass.NETWORK, creating=True) == 5
    assert s.retry_budget(ErrorClass.POISON, creating=False) == 0
    assert s.stream == "bitrix:operations"
    assert s.dead_stream == "bitrix:operations:dead"
    assert s.redis_url == "redis://localhost:6379/0"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("BITRIX_WORKER_BATCH_SIZE", "51", "BITRIX_WORKER_BATCH_SIZE"),
        ("BITRIX_WORKER_BACKOFF_BASE_S", "-1", "BITRIX_WORKER_BACKOFF_BASE_S"),
        ("BITRIX_WORKER_CONCURRENCY", "many", "BITRIX_WORKER_CONCURRENCY"),
        ("REDIS_URL", "http://nope", "REDIS_URL"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
        ("BITRIX_WEBHOOK_URL", "https://portal/rest/abc/", "BITRIX_WEBHOOK_URL"),
    ],
)
def test_bad_setting_names_itself(monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(named)


def test_webhook_secret_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITRIX_WEBHOOK_URL", URL)
    s = load_settings()
    assert s.webhook.reveal() == URL
    for text in (str(s), repr(s), str(s.webhook), repr(s.webhook), str(s.redacted())):
        assert SECRET not in text
    bad = f"ftp://portal/rest/1/{SECRET}/"
    monkeypatch.setenv("BITRIX_WEBHOOK_URL", bad)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert SECRET not in str(info.value)


def test_missing_webhook_is_named() -> None:
    with pytest.raises(ConfigError, match="BITRIX_WEBHOOK_URL"):
        _ = load_settings(webhook_url="").webhook


def test_postgres_url_gets_async_driver() -> None:
    s = load_settings(database_url="postgresql://root@127.0.0.1:5432/test")
    assert s.database_url == "postgresql+asyncpg://root@127.0.0.1:5432/test"


# ---- every bad value fails at start, with one line naming the setting and no secret ---------------------

PASSWORD = "pw-9f8e7d6c5b4a"
BAD_SETTINGS = [
    ("REDIS_URL", "redis://host:6379/x", "database number"),  # redis-py would silently use database 0
    ("REDIS_URL", "redis://host:6379/0/1", "database number"),
    ("REDIS_URL", "redis://host:abc/0", "bad port"),
    ("REDIS_URL", f"redis://:{PASSWORD}@host:99999/0", "bad port"),
    ("REDIS_URL", "redis://host:0/0", "bad port"),
    ("REDIS_URL", "redis://my host:6379/0", "bad host"),
    ("REDIS_URL", "redis://host:6379/0?db=two", "database number"),
    ("REDIS_URL", "redis:///0", "no host"),
    ("REDIS_URL", "unix://", "socket path"),
    ("DATABASE_URL", f"postgresql://root:{PASSWORD}@host:notaport/x", "bad port"),
    ("DATABASE_URL", "postgres://root@my host:5432/x", "bad host"),
    ("DATABASE_URL", "postgresql://root@host:70000/x", "bad port"),
    ("BITRIX_WEBHOOK_URL", f"https://portal.example:99999/rest/1/{SECRET}/", "bad port"),
    ("BITRIX_WEBHOOK_URL", f"https://portal.example:https/rest/1/{SECRET}/", "bad port"),
    ("BITRIX_WEBHOOK_URL", f"https://por tal.example/rest/1/{SECRET}/", "bad host"),
    ("BITRIX_WEBHOOK_URL", f"https://portal.example/rest/1/{SECRET}/?auth={SECRET}", "no query"),
    ("BITRIX_WORKER_HTTP_HOST", "0.0.0.0 ", "host name"),
    ("BITRIX_WORKER_HTTP_HOST", "", "host name"),
    ("BITRIX_WORKER_READ_TIMEOUT_S", "inf", "finite"),
    ("BITRIX_WORKER_BACKOFF_MAX_S", "inf", "finite"),
    ("BITRIX_WORKER_RATE_PER_S", "inf", "finite"),
    ("BITRIX_WORKER_RATE_PER_S", "nan", "finite"),
    ("BITRIX_WORKER_REQUEST_DEADLINE_S", "0", "greater than 0"),
    ("BITRIX_WORKER_MAX_RESPONSE_BYTES", "100", "greater than or equal to 1024"),
]


@pytest.mark.parametrize(("env", "value", "says"), BAD_SETTINGS)
def test_bad_value_names_its_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, says: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert info.value.setting == env
    assert text.startswith(f"{env}: ")
    assert says in text
    assert "\n" not in text
    assert SECRET not in text
    assert PASSWORD not in text


FLOAT_SETTINGS = [name for name, f in Settings.model_fields.items() if f.annotation is float]


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e999"])
def test_no_float_setting_takes_a_non_finite_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(env_name(name), value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == env_name(name)


def test_every_float_setting_is_covered() -> None:
    assert len(FLOAT_SETTINGS) >= 15  # the table above is generated; make sure it is not empty by accident


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("redis_url", "redis://localhost"),
        ("redis_url", "redis://localhost:6379/"),
        ("redis_url", "redis://h:6379/15"),
        ("redis_url", f"rediss://user:{PASSWORD}@redis.example.com:6380/2"),
        ("redis_url", "unix:///var/run/redis.sock?db=3"),
        ("redis_url", "redis://[::1]:6379/0"),
        ("database_url", "postgresql://root@127.0.0.1:5432/test"),
        ("database_url", "postgresql:///test"),
        ("database_url", "sqlite:///relative/path.sqlite3"),
        ("http_host", "0.0.0.0"),
        ("http_host", "::1"),
        ("webhook_url", f"https://portal.example:8443/rest/1/{SECRET}/"),
        ("webhook_url", f"https://портал.рф/rest/1/{SECRET}/"),
    ],
)
def test_good_values_still_pass(field: str, value: str) -> None:
    s = load_settings(**{field: value})
    assert getattr(s, field) is not None


def test_redacted_settings_hide_every_password_but_keep_hosts_and_paths() -> None:
    s = load_settings(
        webhook_url=URL,
        redis_url=f"redis://:{PASSWORD}@redis.internal:6379/4",
        database_url=f"postgresql://app:{PASSWORD}@db.internal:5432/crm",
    )
    shown = s.redacted()
    assert shown["webhook_url"] == "https://portal.bitrix24.ru/rest/7/***/"
    assert shown["redis_url"] == "redis://:***@redis.internal:6379/4"
    assert shown["database_url"] == "postgresql+asyncpg://app:***@db.internal:5432/crm"
    assert PASSWORD not in str(shown)
    assert SECRET not in str(shown)
