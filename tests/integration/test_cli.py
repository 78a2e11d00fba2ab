"""The operator commands end to end: typer's CliRunner (in-process) and one real subprocess, real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis
from typer.testing import CliRunner, Result

from bitrix_worker.cli import app

SECRET = "s3cr3t-token-abc"


@pytest.fixture
def env(redis_url: str, key_prefix: str) -> Iterator[dict[str, str]]:
    values = {
        "REDIS_URL": redis_url,
        "BITRIX_WORKER_STREAM": f"{key_prefix}:ops",
        "BITRIX_WORKER_DEAD_STREAM": f"{key_prefix}:dead",
        "BITRIX_WEBHOOK_URL": f"https://portal.example.com/rest/1/{SECRET}/",
        "DATABASE_URL": "sqlite+aiosqlite:///does-not-exist/mapping.sqlite3",
    }
    yield values
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{key_prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def dead_ids(env: dict[str, str], redis_url: str) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    ids = []
    for key, cls in [("a", "invalid_data"), ("b", "auth"), ("c", "invalid_data")]:
        payload = json.dumps({"op": "create", "entity": "deal", "key": key, "fields": {}})
        error = json.dumps({"class": cls, "description": f"{cls} {key}", "attempts": 2, "history": []})
        ids.append(
            client.xadd(env["BITRIX_WORKER_DEAD_STREAM"], {"payload": payload, "error": error}).decode()
        )
    client.close()
    return ids


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def test_status_json_and_human(env: dict[str, str], dead_ids: list[str]) -> None:
    result = invoke(env, "status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["stream"] == env["BITRIX_WORKER_STREAM"]
    assert data["dead_letter_by_class"] == {"invalid_data": 2, "auth": 1}
    assert data["portal"] == "portal.example.com"
    assert data["breaker"]["open"] is False
    human = invoke(env, "status")
    assert human.exit_code == 0
    assert "stream length" in human.stdout
    assert "invalid_data:" in human.stdout
    assert SECRET not in human.stdout + result.stdout


def test_redis_down_is_one_line_and_exit_1(env: dict[str, str]) -> None:
    down = {**env, "REDIS_URL": "redis://:pw@127.0.0.1:1/0"}
    for args in (["status"], ["dlq", "list"], ["dlq", "replay", "--all"], ["enqueue", "create", "deal", "k"]):
        result = invoke(down, *args)
        assert result.exit_code == 1, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error:")
        assert "Traceback" not in result.output
        assert "pw@" not in result.output
    assert (
        "cannot connect to Redis at REDIS_URL (redis://:***@127.0.0.1:1/0)" in invoke(down, "status").stderr
    )


def test_dlq_list_show(env: dict[str, str], dead_ids: list[str]) -> None:
    listed = json.loads(invoke(env, "dlq", "list", "--json").stdout)
    assert [e["id"] for e in listed] == dead_ids[::-1]
    oldest = json.loads(invoke(env, "dlq", "list", "--json", "--oldest", "--class", "invalid_data").stdout)
    assert [e["key"] for e in oldest] == ["deal:a", "deal:c"]
    human = invoke(env, "dlq", "list", "--limit", "1")
    assert human.exit_code == 0
    assert "deal:c" in human.stdout
    shown = json.loads(invoke(env, "dlq", "show", dead_ids[1], "--json").stdout)
    assert shown["payload"]["key"] == "b"
    assert shown["error"]["class"] == "auth"
    assert "auth b" in invoke(env, "dlq", "show", dead_ids[1]).stdout
    missing = invoke(env, "dlq", "show", "1-0")
    assert (missing.exit_code, missing.stderr.strip()) == (1, "error: no dead-letter entry 1-0")
    assert invoke(env, "dlq", "show", "nope").exit_code == 2


def test_dlq_replay_dry_run_by_id_and_by_class(
    env: dict[str, str], dead_ids: list[str], redis_url: str
) -> None:
    dry = json.loads(invoke(env, "dlq", "replay", "--class", "invalid_data", "--dry-run", "--json").stdout)
    assert (dry["dry_run"], dry["selected"]) == (True, 2)
    assert [e["key"] for e in dry["would_replay"]] == ["deal:a", "deal:c"]
    one = invoke(env, "dlq", "replay", dead_ids[1])
    assert one.exit_code == 0
    assert "replayed 1 of 1" in one.stdout
    by_class = json.loads(
        invoke(env, "dlq", "replay", "--class", "invalid_data", "--rate", "100/s", "--json").stdout
    )
    assert [r["dead_id"] for r in by_class["replayed"]] == [dead_ids[0], dead_ids[2]]
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.xlen(env["BITRIX_WORKER_STREAM"]) == 3
        assert client.xlen(env["BITRIX_WORKER_DEAD_STREAM"]) == 0
    finally:
        client.close()
    again = invoke(env, "dlq", "replay", dead_ids[1])
    assert again.exit_code == 1  # asked for by id, and it is gone
    assert "already gone" in again.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dlq", "replay"], "exactly one"),
        (["dlq", "replay", "--all", "--class", "auth"], "exactly one"),
        (["dlq", "replay", "--all", "--rate", "fast"], "--rate"),
        (["dlq", "purge", "--all"], "--yes"),
    ],
)
def test_bad_usage_exits_2_with_one_line(env: dict[str, str], args: list[str], message: str) -> None:
    result = invoke(env, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_dlq_purge(env: dict[str, str], dead_ids: list[str]) -> None:
    assert json.loads(invoke(env, "dlq", "purge", dead_ids[0], "--json").stdout) == {
        "purged": 1,
        "missing": [],
    }
    assert "purged 1 entries" in invoke(env, "dlq", "purge", "--class", "auth").stdout
    assert json.loads(invoke(env, "dlq", "purge", "--all", "--yes", "--json").stdout)["purged"] == 1
    assert json.loads(invoke(env, "dlq", "list", "--json").stdout) == []


def test_config_hides_the_secret(env: dict[str, str]) -> None:
    for args in (["config"], ["config", "--json"]):
        result = invoke(env, *args)
        assert result.exit_code == 0
        assert SECRET not in result.stdout
        assert "portal.example.com" in result.stdout


def test_python_dash_m_runs_the_cli(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bitrix_worker", "dlq", "list", "--json"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
