"""``--portal <id>`` on ``portal``, ``lookup``, ``fields`` and ``check``: one registry portal operated from
the command line. Real Redis, a SQLite registry with a Fernet key, and three emulated portals over HTTP: the
default (a webhook), a registry webhook portal and a registry OAuth portal whose access tokens expire fast.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner, Result

from bitrix_worker.cli import app
from bitrix_worker.emulator import EmulatorConfig, EmulatorServer, SchemaConfig, UserFieldConfig
from bitrix_worker.emulator.oauth import OAuthConfig
from bitrix_worker.mapping import DEFAULT_TABLE, MappingStore
from bitrix_worker.portal_layout import portal_table
from bitrix_worker.portals.model import OAuthTokens, PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key

HOOK, OAUTH = "hook.example.com", "oauth.example.com"
HOOK_SECRET = "hooksecret0123456789"
PAYMENT = UserFieldConfig(name="UF_CRM_PAYMENT", type="enumeration", label="Payment", items=["Cash", "Card"])
COLOUR = UserFieldConfig(name="UF_CRM_COLOUR", type="string", label="Colour")
LIFETIME_S = 0.5


def _schema(field: UserFieldConfig) -> SchemaConfig:
    return SchemaConfig(user_fields={"deal": [field]})


@pytest.fixture  # per test: a refresh kills the emulator's first token pair, which each test registers
def portals() -> Iterator[dict[str, EmulatorServer]]:
    oauth = EmulatorConfig(limits_enabled=False, oauth=OAuthConfig(access_lifetime_s=LIFETIME_S))
    with (
        EmulatorServer(EmulatorConfig()) as default,
        EmulatorServer(EmulatorConfig(secret=HOOK_SECRET, crm_schema=_schema(COLOUR))) as hook,
        EmulatorServer(oauth.model_copy(update={"crm_schema": _schema(PAYMENT)})) as auth,
    ):
        yield {"default": default, HOOK: hook, OAUTH: auth}


def _register(url: str, key: str, portals: dict[str, EmulatorServer]) -> None:
    hook, auth = portals[HOOK], portals[OAUTH]
    o = auth.config.oauth
    assert o is not None
    records = [
        PortalRecord(HOOK, "webhook", f"{hook.base_url}/rest/", webhook_url=hook.webhook_url),
        PortalRecord(
            OAUTH,
            "oauth",
            f"{auth.base_url}/rest/",
            client_id=o.client_id,
            client_secret=o.client_secret,
            tokens=OAuthTokens(o.access_token, o.refresh_token),
            token_url=f"{auth.base_url}/oauth/token/",
        ),
    ]

    async def go() -> None:
        registry = await PortalRegistry.connect(url, box=SecretBox([key]))
        try:
            for record in records:
                await registry.add(record)
        finally:
            await registry.close()

    asyncio.run(go())


@pytest.fixture
def env(
    redis_url: str, key_prefix: str, tmp_path: Path, portals: dict[str, EmulatorServer]
) -> Iterator[dict[str, str]]:
    values = {
        "REDIS_URL": redis_url,
        "BITRIX_WORKER_STREAM": f"{key_prefix}:ops",
        "BITRIX_WORKER_DEAD_STREAM": f"{key_prefix}:dead",
        "BITRIX_WEBHOOK_URL": portals["default"].webhook_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}",
        "BITRIX_WORKER_SECRETS_KEY": new_key(),
    }
    _register(values["DATABASE_URL"], values["BITRIX_WORKER_SECRETS_KEY"], portals)
    yield values
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{key_prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


def invoke(env: dict[str, str], *args: str, stdin: str | None = None, **extra: str) -> Result:
    return CliRunner().invoke(app, list(args), env={**env, **extra}, input=stdin)


def _names(result: Result) -> set[str]:
    assert result.exit_code == 0, result.output
    return {f["name"] for f in json.loads(result.stdout)["fields"] if f["name"].startswith("UF_")}


def _token_version(env: dict[str, str]) -> int:
    shown = invoke(env, "portals", "show", OAUTH, "--json")
    assert shown.exit_code == 0, shown.output
    return int(json.loads(shown.stdout)["token_version"])


def test_fields_reads_each_portal_through_its_own_client_and_cache(env: dict[str, str]) -> None:
    assert _names(invoke(env, "fields", "deal", "--json")) == set()
    assert _names(invoke(env, "fields", "deal", "--json", "--portal", HOOK)) == {"UF_CRM_COLOUR"}
    assert _names(invoke(env, "fields", "deal", "--json", "--portal", OAUTH)) == {"UF_CRM_PAYMENT"}
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        stream = env["BITRIX_WORKER_STREAM"]
        for pid in (HOOK, OAUTH):  # cached where that portal's workers read it: under its own stream
            assert client.exists(f"{{{stream}:{pid}}}:schema:{pid}:deal")
    finally:
        client.close()
    # the OAuth token expires; a refetch refreshes it through the registry (the stored pair moves on)
    before = _token_version(env)
    time.sleep(LIFETIME_S + 0.2)
    again = invoke(env, "fields", "deal", "--json", "--refresh", "--portal", OAUTH)
    assert _names(again) == {"UF_CRM_PAYMENT"}
    assert _token_version(env) == before + 1
    human = invoke(env, "fields", "deal", "--portal", HOOK)
    assert "Colour" in human.stdout
    assert HOOK_SECRET not in human.output + again.output


def test_check_validates_against_the_chosen_portal(env: dict[str, str], tmp_path: Path) -> None:
    payload = tmp_path / "op.json"
    fields = {"TITLE": "x", "UF_CRM_PAYMENT": "1000"}
    payload.write_text(json.dumps({"op": "update", "entity": "deal", "key": "k", "fields": fields}))
    ok = invoke(env, "check", str(payload), "--portal", OAUTH)
    assert ok.exit_code == 0, ok.output
    elsewhere = invoke(env, "check", str(payload), "--json", "--portal", HOOK)
    assert elsewhere.exit_code == 1, elsewhere.output
    assert "UF_CRM_PAYMENT" in elsewhere.stdout


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        (["fields", "deal", "--portal", "nope.example.com"], {}, "--portal: no portal 'nope.example.com'"),
        (["fields", "deal", "--portal", "bad id"], {}, "--portal: portal id 'bad id'"),
        (["check", "-", "--portal", "nope"], {}, "--portal: no portal 'nope'"),
        (["lookup", "deal", "k", "--portal", "nope"], {}, "--portal: no portal 'nope'"),
        (["portal", "status", "--portal", "nope"], {}, "--portal: no portal 'nope'"),
        (["portal", "pause", "--portal", "a/b"], {}, "--portal: portal id 'a/b'"),
        (["fields", "deal", "--portal", OAUTH], {"BITRIX_WORKER_SECRETS_KEY": ""}, "SECRETS_KEY"),
    ],
)
def test_a_wrong_portal_is_one_line(
    env: dict[str, str], args: list[str], extra_env: dict[str, str], message: str
) -> None:
    stdin = json.dumps({"op": "update", "entity": "deal", "key": "k", "fields": {"TITLE": "x"}})
    result = invoke(env, *args, stdin=stdin, **extra_env)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _gate(env: dict[str, str], stream: str, pid: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        return dict(client.hgetall(f"{{{stream}}}:breaker:{pid}"))
    finally:
        client.close()


def _state(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_portal_gate_commands_act_on_the_chosen_portal(env: dict[str, str]) -> None:
    stream = env["BITRIX_WORKER_STREAM"]
    paused = _state(invoke(env, "portal", "pause", "--portal", HOOK, "--reason", "fixing", "--json"))
    shown = (paused["portal"], paused["open"], paused["manual"], paused["reason"])
    assert shown == (HOOK, True, True, "fixing")
    assert _gate(env, f"{stream}:{HOOK}", HOOK)[b"manual"] == b"1"  # where a multi-portal worker reads it
    assert _state(invoke(env, "portal", "status", "--portal", HOOK, "--json"))["open"] is True
    assert _state(invoke(env, "portal", "status", "--json"))["open"] is False  # the default is untouched
    assert _state(invoke(env, "portal", "status", "--portal", OAUTH, "--json"))["open"] is False
    human = invoke(env, "portal", "status", "--portal", HOOK)
    assert f"portal {HOOK}: " in human.stdout
    assert "fixing" in human.stdout
    reset = _state(invoke(env, "portal", "reset", "--portal", HOOK, "--json"))
    assert reset["open"] is False
    assert _gate(env, f"{stream}:{HOOK}", HOOK).get(b"open") != b"1"
    # `portals pause` records the state and shuts the same gates; `portal resume` reopens them and says
    # that the registry still says paused
    assert invoke(env, "portals", "pause", HOOK).exit_code == 0
    assert _state(invoke(env, "portal", "status", "--portal", HOOK, "--json"))["open"] is True
    resumed = invoke(env, "portal", "resume", "--portal", HOOK)
    assert resumed.exit_code == 0, resumed.output
    assert f"registry records portal {HOOK} as paused" in resumed.output
    for s in (stream, f"{stream}:{HOOK}"):
        assert _gate(env, s, HOOK).get(b"open") != b"1"


def test_lookup_reads_the_portals_stream_and_mapping_table(env: dict[str, str]) -> None:
    enqueued = invoke(env, "enqueue", "create", "deal", "order-7", "--portal", HOOK, "-f", '{"TITLE":"x"}')
    assert enqueued.exit_code == 0, enqueued.output

    async def applied() -> None:  # what the portal's worker writes: its own table
        store = await MappingStore.connect(env["DATABASE_URL"], table=portal_table(DEFAULT_TABLE, HOOK, None))
        try:
            await store.record_applied("deal", "order-7", bitrix_id=4242, version=None, fence=1)
        finally:
            await store.close()

    asyncio.run(applied())
    mine = json.loads(invoke(env, "lookup", "deal", "order-7", "--json", "--portal", HOOK).stdout)
    assert (mine["bitrix_id"], len(mine["waiting"])) == (4242, 1)
    assert mine["portal_link"].startswith(env_base(env, HOOK))
    default = json.loads(invoke(env, "lookup", "deal", "order-7", "--json").stdout)
    assert (default["bitrix_id"], default["waiting"]) == (None, [])
    human = invoke(env, "lookup", "deal", "order-7", "--portal", HOOK)
    assert "4242" in human.stdout
    assert HOOK_SECRET not in human.output


def env_base(env: dict[str, str], pid: str) -> str:
    """The registry portal's host as ``portals show`` gives it (its REST endpoint, without ``/rest/``)."""
    shown = json.loads(invoke(env, "portals", "show", pid, "--json").stdout)
    return str(shown["endpoint"]).removesuffix("rest/")


def test_dlq_replay_guards_with_the_portals_own_mapping_table(env: dict[str, str]) -> None:
    stream = env["BITRIX_WORKER_STREAM"]
    payload = json.dumps({"op": "update", "entity": "deal", "key": "k-5", "version": 3, "fields": {}})
    error = json.dumps({"class": "auth", "description": "auth", "attempts": 1, "history": []})
    dead = f"{env['BITRIX_WORKER_DEAD_STREAM']}:{HOOK}"
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        dead_id = client.xadd(dead, {"payload": payload, "error": error})
    finally:
        client.close()

    async def applied() -> None:  # the key moved on to version 5 on that portal
        store = await MappingStore.connect(env["DATABASE_URL"], table=portal_table(DEFAULT_TABLE, HOOK, None))
        try:
            await store.record_applied("deal", "k-5", bitrix_id=5, version=5, fence=1)
        finally:
            await store.close()

    asyncio.run(applied())
    replay = invoke(env, "dlq", "replay", "--all", "--json", "--portal", HOOK)
    assert replay.exit_code == 0, replay.output
    report = json.loads(replay.stdout)
    assert report["skipped"] == [
        {"dead_id": dead_id.decode(), "reason": "the key is at version 5, this operation is version 3"}
    ]
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        assert (client.xlen(f"{stream}:{HOOK}"), client.xlen(dead)) == (0, 1)  # left in place
    finally:
        client.close()


def test_status_counts_the_portals_own_mapping_table(env: dict[str, str]) -> None:
    async def applied() -> None:  # two rows in HOOK's table, none in the default one
        store = await MappingStore.connect(env["DATABASE_URL"], table=portal_table(DEFAULT_TABLE, HOOK, None))
        try:
            for n in (1, 2):
                await store.record_applied("deal", f"s-{n}", bitrix_id=n, version=None, fence=1)
        finally:
            await store.close()

    asyncio.run(applied())
    mine = invoke(env, "status", "--json", "--portal", HOOK)
    assert mine.exit_code == 0, mine.output
    data = json.loads(mine.stdout)
    assert (data["mapping"]["active"], data["stream"]) == (2, f"{env['BITRIX_WORKER_STREAM']}:{HOOK}")
    default = json.loads(invoke(env, "status", "--json").stdout)
    assert default["mapping"]["active"] == 0
    unknown = invoke(env, "status", "--json", "--portal", "not-registered.example.com")
    assert unknown.exit_code == 0, unknown.output  # an unknown id's stream is still shown
    assert json.loads(unknown.stdout)["mapping"] == {
        "active": 0,
        "deleted": 0,
        "note": "not a registry portal: it has no mapping table",
    }
    typo = portal_table(DEFAULT_TABLE, "not-registered.example.com", None)
    with sqlite3.connect(env["DATABASE_URL"].split(":///", 1)[1]) as db:  # a typo creates no table
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert typo not in tables
    assert portal_table(DEFAULT_TABLE, HOOK, None) in tables
