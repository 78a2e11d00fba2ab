"""A bad setting stops `config` and `run` with one line naming it and exit code 2, never a traceback; `config`
never prints a password or the webhook secret, and shows the rest of each URL so a typo can be seen.

No Redis is needed: every case fails (or, for `config`, succeeds) before any connection is made.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bitrix_worker.cli import app
from bitrix_worker.errors import StoreError
from bitrix_worker.mapping import MappingStore

SECRET = "cli-webhook-secret-0123"
PASSWORD = "cli-redis-pw-4567"
DB_PASSWORD = "cli-db-pw-89ab"
GOOD = {
    "BITRIX_WEBHOOK_URL": f"https://portal.example.com/rest/1/{SECRET}/",
    "REDIS_URL": f"redis://:{PASSWORD}@redis.internal:6379/3",
    "DATABASE_URL": f"postgresql://app:{DB_PASSWORD}@db.internal:5432/crm",
}
BAD = [
    ("REDIS_URL", "redis://host:6379/x"),
    ("REDIS_URL", f"redis://:{PASSWORD}@host:abc/0"),
    ("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@db:notaport/x"),
    ("BITRIX_WORKER_READ_TIMEOUT_S", "inf"),
    ("BITRIX_WORKER_BACKOFF_MAX_S", "inf"),
    ("BITRIX_WORKER_RATE_PER_S", "nan"),
    ("BITRIX_WEBHOOK_URL", f"https://portal.example.com:99999/rest/1/{SECRET}/"),
    ("BITRIX_WEBHOOK_URL", f"https://portal example.com/rest/1/{SECRET}/"),
    ("BITRIX_WEBHOOK_URL", f"https://portal.example.com/REST/1/{SECRET}/"),
    ("BITRIX_WEBHOOK_URL", f"https://portal.example.com/rest/admin/{SECRET}/"),
    ("BITRIX_WEBHOOK_URL", f"https://portal.example.com/rst/1/{SECRET}/"),
]


def _assert_one_clean_line(stderr: str, setting: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: bad setting {setting}: "), stderr
    for secret in (SECRET, PASSWORD, DB_PASSWORD):
        assert secret not in stderr


@pytest.mark.parametrize("command", [["config"], ["config", "--json"], ["run", "--until-idle"]])
@pytest.mark.parametrize(("setting", "value"), BAD)
def test_bad_setting_is_one_line_and_exit_2(command: list[str], setting: str, value: str) -> None:
    result = CliRunner().invoke(app, command, env={**GOOD, setting: value})
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    _assert_one_clean_line(result.stderr, setting)


def test_a_mistyped_webhook_shows_where_the_typo_is() -> None:
    env = {**GOOD, "BITRIX_WEBHOOK_URL": f"https://portal.example.com/rest/admin/{SECRET}/"}
    result = CliRunner().invoke(app, ["config"], env=env)
    assert "https://portal.example.com/rest/admin/***/" in result.stderr


@pytest.mark.parametrize("command", [["config"], ["run"]])
def test_a_real_process_prints_no_traceback(command: list[str], tmp_path: Path) -> None:
    env = {**GOOD, "PATH": "/usr/bin:/bin", "REDIS_URL": "redis://host:6379/x"}
    done = subprocess.run(
        [sys.executable, "-m", "bitrix_worker", *command],
        env=env,
        cwd=tmp_path,  # no stray .env is read
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    _assert_one_clean_line(done.stderr, "REDIS_URL")


def test_config_masks_passwords_and_the_secret_but_shows_hosts() -> None:
    text = CliRunner().invoke(app, ["config"], env=GOOD)
    as_json = CliRunner().invoke(app, ["config", "--json"], env=GOOD)
    assert (text.exit_code, as_json.exit_code) == (0, 0)
    for output in (text.stdout, as_json.stdout):
        for secret in (SECRET, PASSWORD, DB_PASSWORD):
            assert secret not in output
        assert "redis://:***@redis.internal:6379/3" in output
        assert "postgresql+asyncpg://app:***@db.internal:5432/crm" in output
        assert "https://portal.example.com/rest/1/***/" in output
    assert json.loads(as_json.stdout)["redis_url"] == "redis://:***@redis.internal:6379/3"


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_errors_show_urls_without_passwords() -> None:
    port = _closed_port()
    env = {**GOOD, "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{port}/0"}
    result = CliRunner().invoke(app, ["status"], env=env)
    assert result.exit_code == 1
    assert f"redis://:***@127.0.0.1:{port}/0" in result.stderr
    assert PASSWORD not in result.stderr


async def test_mapping_store_errors_show_urls_without_passwords() -> None:
    port = _closed_port()
    url = f"postgresql+asyncpg://app:{DB_PASSWORD}@127.0.0.1:{port}/crm?password={DB_PASSWORD}"
    with pytest.raises(StoreError) as info:
        await MappingStore.connect(url)
    assert f"app:***@127.0.0.1:{port}/crm?password=***" in str(info.value)
    assert DB_PASSWORD not in str(info.value)
