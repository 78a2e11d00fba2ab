"""``bitrix-worker fields`` and ``bitrix-worker check`` end to end: typer's CliRunner, real Redis, the
emulator over HTTP; ``check --schema`` offline with neither."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from typer.testing import CliRunner, Result

from bitrix_worker.cli import app
from bitrix_worker.emulator import (
    EmulatorConfig,
    EmulatorServer,
    SchemaConfig,
    UserFieldConfig,
)

PAYMENT = UserFieldConfig(
    name="UF_CRM_PAYMENT_METHOD", type="enumeration", label="Payment method", items=["Cash", "Card"]
)
CONFIG = EmulatorConfig(crm_schema=SchemaConfig(user_fields={"deal": [PAYMENT]}))


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(CONFIG) as server:
        yield server


@pytest.fixture
def env(redis_url: str, key_prefix: str, emulator: EmulatorServer) -> Iterator[dict[str, str]]:
    yield {
        "REDIS_URL": redis_url,
        "BITRIX_WORKER_STREAM": f"{key_prefix}:ops",
        "BITRIX_WORKER_DEAD_STREAM": f"{key_prefix}:dead",
        "BITRIX_WEBHOOK_URL": emulator.webhook_url,
    }
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{key_prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


def invoke(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env, input=stdin)


def _requests(emulator: EmulatorServer) -> int:
    return int(httpx.get(f"{emulator.base_url}/_emulator/stats", timeout=5).json()["requests"])


def _payload(tmp_path: Path, fields: dict[str, Any], op: str = "update", name: str = "op.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"op": op, "entity": "deal", "key": "order-1", "fields": fields}))
    return str(path)


def test_fields_prints_the_schema_with_labels_and_caches_it(
    env: dict[str, str], emulator: EmulatorServer
) -> None:
    before = _requests(emulator)
    result = invoke(env, "fields", "deal", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    payment = next(f for f in data["fields"] if f["name"] == "UF_CRM_PAYMENT_METHOD")
    assert payment["label"] == "Payment method"
    assert [i["value"] for i in payment["items"]] == ["Cash", "Card"]
    fetched = _requests(emulator)
    assert fetched - before == 2
    human = invoke(env, "fields", "deal")
    assert human.exit_code == 0, human.output
    assert "Payment method" in human.stdout
    assert _requests(emulator) == fetched  # the second command read the shared cache


def test_fields_of_an_unknown_entity_is_bad_usage(env: dict[str, str]) -> None:
    result = invoke(env, "fields", "planet")
    assert result.exit_code == 2
    assert "entity 'planet': use deal" in result.output


def test_check_finds_a_misspelt_field_and_names_the_right_one(env: dict[str, str], tmp_path: Path) -> None:
    bad = _payload(tmp_path, {"UF_CRM_PAYMENT_METHD": "1000", "OPPORTUNITY": "1,5"})
    result = invoke(env, "check", bad)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("unknown_field UF_CRM_PAYMENT_METHD: ")
    assert "UF_CRM_PAYMENT_METHOD ('Payment method')" in lines[0]
    assert lines[1].startswith("wrong_type OPPORTUNITY: ")
    as_json = json.loads(invoke(env, "check", bad, "--json").stdout)
    assert as_json["valid"] is False
    assert [f["kind"] for f in as_json["findings"]] == ["unknown_field", "wrong_type"]
    good = invoke(env, "check", _payload(tmp_path, {"UF_CRM_PAYMENT_METHOD": "1000"}, name="ok.json"))
    assert (good.exit_code, good.stdout) == (0, "")


def test_check_offline_against_a_saved_schema_and_from_stdin(env: dict[str, str], tmp_path: Path) -> None:
    saved = tmp_path / "deal.schema.json"
    saved.write_text(invoke(env, "fields", "deal", "--json").stdout)
    offline = {"REDIS_URL": "redis://127.0.0.1:1/0", "BITRIX_WEBHOOK_URL": ""}
    payload = json.dumps({"op": "create", "entity": "deal", "key": "k", "fields": {"STAGE_ID": "Won"}})
    result = invoke(offline, "check", "-", "--schema", str(saved), stdin=payload)
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("not_in_list STAGE_ID: ")
    ok = json.dumps({"op": "create", "entity": "deal", "key": "k", "fields": {"STAGE_ID": "WON"}})
    assert invoke(offline, "check", "-", "--schema", str(saved), stdin=ok).exit_code == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not an operation payload"),
        ('{"op": "fly", "entity": "deal", "key": "k"}', "not an operation payload"),
        (None, "cannot read"),
    ],
)
def test_check_bad_input_exits_2_with_one_line(
    env: dict[str, str], tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "payload.json"
    if content is not None:
        path.write_text(content)
    result = invoke(env, "check", str(path))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_check_refuses_a_schema_file_together_with_a_portal(env: dict[str, str], tmp_path: Path) -> None:
    """``--schema`` never asks a portal, so ``--portal`` beside it would be silently ignored: refused."""
    saved = tmp_path / "deal.schema.json"
    saved.write_text(invoke(env, "fields", "deal", "--json").stdout)
    result = invoke(env, "check", _payload(tmp_path, {}), "--schema", str(saved), "--portal", "shop-1")
    assert result.exit_code == 2
    assert "give one" in result.output
    assert "Traceback" not in result.output


def test_check_refuses_a_schema_file_of_another_entity(env: dict[str, str], tmp_path: Path) -> None:
    saved = tmp_path / "contact.json"
    saved.write_text(invoke(env, "fields", "contact", "--json").stdout)
    result = invoke(env, "check", _payload(tmp_path, {}), "--schema", str(saved))
    assert result.exit_code == 2
    assert "schema of contact" in result.output
    broken = tmp_path / "broken.json"
    broken.write_text("[]")
    assert invoke(env, "check", _payload(tmp_path, {}), "--schema", str(broken)).exit_code == 2


def test_fields_and_check_of_the_crm_item_entities(env: dict[str, str], tmp_path: Path) -> None:
    """Smart processes, smart invoices and quotes: the crm.item.fields schema, camelCase, with one stage
    list per pipeline; ``check`` validates as the worker sends (findings in the payload's spelling)."""
    result = invoke(env, "fields", "item:128", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["entity"] == "item:128"
    assert {"title", "stageId", "categoryId"} <= {f["name"] for f in data["fields"]}
    assert data["stage_lists"] == {"0": "DYNAMIC_128_STAGE_0"}
    human = invoke(env, "fields", "smart_invoice")
    assert human.exit_code == 0, human.output
    assert "DT31_0:N" in human.stdout
    path = tmp_path / "invoice.json"
    fields = {"TITLE": "x", "OPENED_X": "Y", "stageId": "DT31_0:Q"}
    path.write_text(json.dumps({"op": "create", "entity": "smart_invoice", "key": "i-1", "fields": fields}))
    checked = invoke(env, "check", str(path))
    assert checked.exit_code == 1, checked.output
    lines = checked.stdout.splitlines()
    assert lines[0].startswith("unknown_field OPENED_X: OPENED_X (sent as openedX): ")
    assert "did you mean opened" in lines[0]
    assert lines[1].startswith("not_in_list stageId: ")
    assert invoke(env, "fields", "item:127").exit_code == 2  # not a smart-process type id
