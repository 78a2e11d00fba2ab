"""Operator-facing CLI details: input errors as one line listing allowed values, help without type noise,
readable end-of-run summary, dead-letter ids never cut, the emulator's URL printed whole."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from harness import WORKER_CMD, Bench, settings_env
from typer.testing import CliRunner, Result

from bitrix_worker.cli import app
from bitrix_worker.cli_support import run_summary


@pytest.fixture
def env(redis_url: str, key_prefix: str) -> Iterator[dict[str, str]]:
    values = {
        "REDIS_URL": redis_url,
        "BITRIX_WORKER_STREAM": f"{key_prefix}:ops",
        "BITRIX_WORKER_DEAD_STREAM": f"{key_prefix}:dead",
        "COLUMNS": "80",
    }
    yield values
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{key_prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("[1]", "error: --fields must be a JSON object like '{\"TITLE\": \"Order 42\"}', got an array"),
        ("null", "error: --fields must be a JSON object like '{\"TITLE\": \"Order 42\"}', got null"),
        ('"ab"', "error: --fields must be a JSON object like '{\"TITLE\": \"Order 42\"}', got a string"),
        ("{x", "error: --fields is not JSON: Expecting property name enclosed in double quotes "
         "(line 1 column 2)"),
    ],
)  # fmt: skip
def test_enqueue_fields_must_be_a_json_object(
    env: dict[str, str], redis_url: str, fields: str, message: str
) -> None:
    result = invoke(env, "enqueue", "create", "deal", "k-1", "-f", fields)
    assert (result.exit_code, result.stderr.strip().splitlines()) == (2, [message])
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.xlen(env["BITRIX_WORKER_STREAM"]) == 0  # nothing was enqueued
    finally:
        client.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "merge", "deal", "k"], "error: op 'merge': use create, update, upsert or delete"),
        (["enqueue", "create", "invoice", "k"],
         "error: entity 'invoice': use deal, contact, company, lead, quote or smart_invoice"),
        (["dlq", "list", "--class", "oops"], "error: --class 'oops': use not_found, invalid_data, auth, "
         "rate_limited, method_limited, blocked, server_error, network, poison or unknown"),
        (["dlq", "replay", "--class", "Auth"], "error: --class 'Auth': use not_found"),
    ],
)  # fmt: skip
def test_errors_list_the_allowed_values(env: dict[str, str], args: list[str], message: str) -> None:
    result = invoke(env, *args)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(message)
    assert "<" not in line  # no enum repr such as <OpKind.CREATE: 'create'>


def test_enqueue_valid_object_still_works(env: dict[str, str], redis_url: str) -> None:
    result = invoke(env, "enqueue", "update", "deal", "k-2", "-f", '{"STAGE_ID": "WON"}', "--version", "3")
    assert result.exit_code == 0, result.output
    client = redis.Redis.from_url(redis_url)
    try:
        ((_, fields),) = client.xrange(env["BITRIX_WORKER_STREAM"])
    finally:
        client.close()
    assert json.loads(fields[b"payload"]) == {
        "op": "update", "entity": "deal", "key": "k-2", "fields": {"STAGE_ID": "WON"}, "version": 3,
    }  # fmt: skip


def test_enqueue_products_and_a_smart_process(env: dict[str, str], redis_url: str) -> None:
    rows = '[{"PRODUCT_NAME": "Mug", "PRICE": 9.5}]'
    result = invoke(env, "enqueue", "create", "item:128", "p-1", "--products", rows)
    assert result.exit_code == 0, result.output
    bad = invoke(env, "enqueue", "create", "contact", "c-1", "--products", rows)
    assert bad.exit_code == 2
    assert "a contact has no product rows" in bad.stderr
    client = redis.Redis.from_url(redis_url)
    try:
        ((_, fields),) = client.xrange(env["BITRIX_WORKER_STREAM"])
    finally:
        client.close()
    assert json.loads(fields[b"payload"]) == {
        "op": "create", "entity": "item:128", "key": "p-1", "fields": {},
        "products": [{"PRODUCT_NAME": "Mug", "PRICE": 9.5}],
    }  # fmt: skip


def test_enqueue_op_id_deduplicates(env: dict[str, str], redis_url: str) -> None:
    args = ["enqueue", "create", "deal", "k-3", "-f", '{"TITLE": "x"}', "--op-id", "k-3:create"]
    first, second = invoke(env, *args), invoke(env, *args)
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout  # the duplicate reports the first entry's id
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.xlen(env["BITRIX_WORKER_STREAM"]) == 1
    finally:
        client.close()
    bad = invoke(env, "enqueue", "create", "deal", "k-3", "--op-id", "a\tb")
    assert (bad.exit_code, bad.stderr.strip()) == (
        2,
        "error: --op-id: op_id must be 1-200 printable characters",
    )


@pytest.mark.parametrize(
    "args",
    [["--help"], ["run", "--help"], ["dlq", "--help"], ["dlq", "list", "--help"], ["config", "--help"]],
)
def test_help_shows_no_bool_metavars(env: dict[str, str], args: list[str]) -> None:
    result = invoke(env, *args)
    assert result.exit_code == 0
    assert "--help" in result.stdout
    assert "<bool>" not in result.stdout
    if args[0] == "run":
        assert "--until-idle " in result.stdout


def test_run_summary_is_a_sentence() -> None:
    assert run_summary({}) == "idle: nothing to do"
    assert run_summary({"applied": 1}) == "idle: 1 operation — applied 1"
    assert run_summary({"dead_lettered": 2, "applied": 10, "skipped": 2}) == (
        "idle: 14 operations — applied 10, dead_lettered 2, skipped 2"
    )


async def test_run_until_idle_ends_with_the_summary(bench: Bench) -> None:
    await bench.enqueue("create", "sum-1", {"TITLE": "x"})
    await bench.enqueue_raw({"not": "an operation"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *WORKER_CMD, "--until-idle",
        env=settings_env(bench.settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert err.decode().strip().splitlines()[-1] == "idle: 2 operations — applied 1, dead_lettered 1"


@pytest.fixture
def long_dead_ids(env: dict[str, str], redis_url: str) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    ids = []
    for entity, key in [("deal", "order-10042"), ("contact", "customer-with-a-rather-long-external-key-77")]:
        payload = json.dumps({"op": "create", "entity": entity, "key": key, "fields": {"TITLE": "t" * 120}})
        error = json.dumps({
            "class": "invalid_data", "attempts": 2, "history": [],
            "dead_lettered_at": int(time.time() * 1000),
            "description": "One or more fields are invalid: the field STAGE_ID has an unknown value XYZ",
        })  # fmt: skip
        ids.append(
            client.xadd(env["BITRIX_WORKER_DEAD_STREAM"], {"payload": payload, "error": error}).decode()
        )
    client.close()
    return ids


def test_dlq_list_and_show_keep_ids_and_payload_whole_at_80_columns(
    env: dict[str, str], long_dead_ids: list[str]
) -> None:
    listed = invoke(env, "dlq", "list")
    assert listed.exit_code == 0
    for entry_id in long_dead_ids:
        assert re.search(rf"^{re.escape(entry_id)}\s", listed.stdout, flags=re.MULTILINE), listed.stdout
    assert "contact:customer-with-a-rather-long-external-key-77" in listed.stdout
    shown = invoke(env, "dlq", "show", long_dead_ids[1])
    assert shown.exit_code == 0
    payload_lines = [line for line in shown.stdout.splitlines() if line.startswith('{"op"')]
    assert len(payload_lines) == 1
    assert json.loads(payload_lines[0])["fields"]["TITLE"] == "t" * 120


def test_dlq_list_filters_by_key(env: dict[str, str], long_dead_ids: list[str]) -> None:
    def keys(*args: str) -> list[str]:
        result = invoke(env, "dlq", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return [e["id"] for e in json.loads(result.stdout)]

    assert keys("--key", "deal:order-10042") == [long_dead_ids[0]]
    assert keys("--key", "order-10042") == [long_dead_ids[0]]
    assert keys("--key", "contact:order-10042") == []
    assert keys("--key", "customer-with-a-rather-long-external-key-77") == [long_dead_ids[1]]
    human = invoke(env, "dlq", "list", "--key", "nope")
    assert human.stdout.strip() == "no dead letters"


def test_emulator_prints_its_webhook_url_in_full(unused_tcp_port: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bitrix_worker", "emulator", "--port", str(unused_tcp_port), "--no-limits"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().strip()
        url = f"http://127.0.0.1:{unused_tcp_port}/rest/1/emulator-secret/"
        assert line == f"emulator: webhook {url} (admin: /_emulator/)"
        for _ in range(100):  # the URL as printed is the one that works
            try:
                answer = httpx.post(url + "crm.deal.fields", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer.status_code == 200
        assert "result" in answer.json()
    finally:
        proc.terminate()
        proc.wait(10)
