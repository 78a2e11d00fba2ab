"""``bitrix-worker portals``: the registry from the command line, with real Redis and SQLite.

Secrets go in through environment variables and never come out (``show`` prints a fingerprint); every user
error is one line and a non-zero exit, never a traceback; ``pause``/``resume`` keep the registry and the
portal's gate in step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner, Result

from bitrix_worker.cli import app
from bitrix_worker.portals.secrets import new_key

CLIENT_SECRET, ACCESS, REFRESH = "client-secret-0123456789", "access-0123456789", "refresh-0123456789"
WEBHOOK_SECRET = "whsecret0123456789"


@pytest.fixture
def env(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    values = {
        "REDIS_URL": redis_url,
        "BITRIX_WORKER_STREAM": f"{key_prefix}:ops",
        "BITRIX_WORKER_DEAD_STREAM": f"{key_prefix}:dead",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}",
        "BITRIX_WORKER_SECRETS_KEY": new_key(),
    }
    yield values
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{key_prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


def invoke(env: dict[str, str], *args: str, **extra: str) -> Result:
    return CliRunner().invoke(app, list(args), env={**env, **extra})


def add_oauth(env: dict[str, str], pid: str = "p1.bitrix24.com") -> Result:
    return invoke(
        env,
        "portals",
        "add",
        pid,
        "--client-id",
        "local.app.1",
        "--plan",
        "enterprise",
        "--json",
        BITRIX_PORTAL_CLIENT_SECRET=CLIENT_SECRET,
        BITRIX_PORTAL_ACCESS_TOKEN=ACCESS,
        BITRIX_PORTAL_REFRESH_TOKEN=REFRESH,
    )


def test_add_list_show_remove_without_printing_a_secret(env: dict[str, str]) -> None:
    added = add_oauth(env)
    assert added.exit_code == 0, added.output
    webhook = f"https://w1.bitrix24.com/rest/1/{WEBHOOK_SECRET}/"
    assert invoke(env, "portals", "add", "w1.bitrix24.com", "--webhook", webhook).exit_code == 0

    listed = json.loads(invoke(env, "portals", "list", "--json").stdout)
    assert [(p["portal"], p["auth"], p["burst"], p["state"]) for p in listed] == [
        ("p1.bitrix24.com", "oauth", 250, "active"),
        ("w1.bitrix24.com", "webhook", 50, "active"),
    ]
    shown = invoke(env, "portals", "show", "p1.bitrix24.com", "--json")
    data = json.loads(shown.stdout)
    assert data["client_secret"].startswith("set (sha256:")
    assert data["refresh_token"].startswith("set (sha256:")
    human = invoke(env, "portals", "show", "w1.bitrix24.com")
    everything = added.output + shown.output + human.output + invoke(env, "portals", "list").output
    for secret in (CLIENT_SECRET, ACCESS, REFRESH, WEBHOOK_SECRET):
        assert secret not in everything

    assert invoke(env, "portals", "remove", "w1.bitrix24.com", "--yes").exit_code == 0
    assert [p["portal"] for p in json.loads(invoke(env, "portals", "list", "--json").stdout)] == [
        "p1.bitrix24.com"
    ]


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        (["portals", "add", "bad id", "--webhook", "x"], {}, "portal id 'bad id'"),
        (["portals", "add", "p2", "--client-id", "x"], {}, "missing --client-secret"),
        (["portals", "add", "p2", "--webhook", "https://h/rest/x/"], {}, "expected https://<portal>/rest/"),
        (["portals", "show", "nope"], {}, "no portal 'nope'"),
        (["portals", "remove", "nope", "--yes"], {}, "no portal 'nope'"),
        (["portals", "resume", "nope"], {}, "no portal 'nope'"),
        (
            ["portals", "show", "p1.bitrix24.com"],
            {"BITRIX_WORKER_SECRETS_KEY": ""},
            "SECRETS_KEY: is required",
        ),
        (["portals", "show", "p1.bitrix24.com"], {"BITRIX_WORKER_SECRETS_KEY": "x"}, "not a Fernet key"),
        (
            ["portals", "show", "p1.bitrix24.com"],
            {"BITRIX_WORKER_SECRETS_KEY": new_key()},
            "cannot be decrypted",
        ),
    ],
)
def test_user_errors_are_one_line(
    env: dict[str, str], args: list[str], extra_env: dict[str, str], message: str
) -> None:
    assert add_oauth(env).exit_code == 0
    result = invoke(env, *args, **extra_env)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_duplicate_needs_replace(env: dict[str, str]) -> None:
    assert add_oauth(env).exit_code == 0
    again = add_oauth(env)
    assert again.exit_code == 1
    assert "already registered" in again.output
    replaced = invoke(
        env,
        "portals",
        "add",
        "p1.bitrix24.com",
        "--webhook",
        f"https://p1.bitrix24.com/rest/1/{WEBHOOK_SECRET}/",
        "--replace",
    )
    assert replaced.exit_code == 0, replaced.output


def test_pause_and_resume_move_the_registry_and_the_gate_together(env: dict[str, str]) -> None:
    assert add_oauth(env).exit_code == 0
    paused = invoke(env, "portals", "pause", "p1.bitrix24.com", "--reason", "maintenance", "--json")
    assert paused.exit_code == 0, paused.output
    assert json.loads(paused.stdout) == {
        "portal": "p1.bitrix24.com",
        "state": "paused",
        "reason": "maintenance",
    }
    [row] = json.loads(invoke(env, "portals", "list", "--json").stdout)
    assert (row["state"], row["state_reason"]) == ("paused", "maintenance")
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        # the gate under the stream, and the one a multi-portal worker keeps under the portal's own stream
        for stream in (env["BITRIX_WORKER_STREAM"], f"{env['BITRIX_WORKER_STREAM']}:p1.bitrix24.com"):
            gate = client.hgetall(f"{{{stream}}}:breaker:p1.bitrix24.com")
            assert gate[b"open"] == b"1"
            assert gate[b"manual"] == b"1"
        resumed = invoke(env, "portals", "resume", "p1.bitrix24.com")
        assert resumed.exit_code == 0, resumed.output
        for stream in (env["BITRIX_WORKER_STREAM"], f"{env['BITRIX_WORKER_STREAM']}:p1.bitrix24.com"):
            gate = client.hgetall(f"{{{stream}}}:breaker:p1.bitrix24.com")
            assert gate.get(b"open") != b"1"
    finally:
        client.close()
    [row] = json.loads(invoke(env, "portals", "list", "--json").stdout)
    assert row["state"] == "active"


def test_rotate_secrets_then_drop_the_old_key(env: dict[str, str]) -> None:
    assert add_oauth(env).exit_code == 0
    old, new = env["BITRIX_WORKER_SECRETS_KEY"], new_key()
    rotated = invoke(env, "portals", "rotate-secrets", BITRIX_WORKER_SECRETS_KEY=f"{new},{old}")
    assert rotated.exit_code == 0, rotated.output
    assert "1 portal" in rotated.output
    shown = invoke(env, "portals", "show", "p1.bitrix24.com", "--json", BITRIX_WORKER_SECRETS_KEY=new)
    assert shown.exit_code == 0, shown.output
