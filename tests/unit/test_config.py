from __future__ import annotations

import pytest

from bitrix_worker.config import load_settings
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
