"""Pure request builders and batch response parsing."""

from __future__ import annotations

from typing import Any

import pytest

from bitrix_worker.bitrix.methods import (
    MAX_BATCH_COMMANDS,
    Command,
    build_batch,
    crm_add,
    crm_delete,
    crm_fields,
    crm_get,
    crm_list,
    crm_update,
    encode_command,
    parse_batch,
    parse_bool,
    parse_id,
    parse_item,
    parse_list,
)
from bitrix_worker.bitrix.querystring import parse_query
from bitrix_worker.taxonomy import ErrorClass, Execution, TimeInfo


@pytest.mark.parametrize("entity", ["deal", "contact", "company", "lead", "DEAL"])
def test_builders_use_entity_in_method(entity: str) -> None:
    e = entity.lower()
    assert crm_add(entity, {"TITLE": "x"}).method == f"crm.{e}.add"
    assert crm_update(entity, 5, {"TITLE": "x"}).method == f"crm.{e}.update"
    assert crm_get(entity, 5).method == f"crm.{e}.get"
    assert crm_delete(entity, "5").method == f"crm.{e}.delete"
    assert crm_list(entity).method == f"crm.{e}.list"
    assert crm_fields(entity).method == f"crm.{e}.fields"


def test_builder_params() -> None:
    assert crm_add("deal", {"TITLE": "t"}, {"REGISTER_SONET_EVENT": "N"}).params == {
        "fields": {"TITLE": "t"},
        "params": {"REGISTER_SONET_EVENT": "N"},
    }
    assert crm_add("deal", {"TITLE": "t"}).params == {"fields": {"TITLE": "t"}}
    assert crm_update("deal", "7", {"A": 1}).params == {"id": 7, "fields": {"A": 1}}
    assert crm_get("lead", 3).params == {"id": 3}
    cmd = crm_list(
        "deal",
        filter={"=ORIGINATOR_ID": "w", "=ORIGIN_ID": "k1"},
        select=("ID", "ORIGIN_ID"),
        order={"ID": "ASC"},
        start=50,
    )
    assert cmd.params == {
        "filter": {"=ORIGINATOR_ID": "w", "=ORIGIN_ID": "k1"},
        "select": ["ID", "ORIGIN_ID"],
        "order": {"ID": "ASC"},
        "start": 50,
    }


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: crm_add("invoice", {}), id="unknown_entity"),
        pytest.param(lambda: crm_get("deal", 0), id="zero_id"),
        pytest.param(lambda: crm_get("deal", -1), id="negative_id"),
        pytest.param(lambda: crm_get("deal", "abc"), id="non_numeric_id"),
        pytest.param(lambda: crm_list("deal", start=-1), id="negative_start"),
        pytest.param(lambda: encode_command(Command("a?b", {})), id="question_mark_in_method"),
    ],
)
def test_builders_reject_bad_input(call: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        call()


def test_encode_command_round_trips_through_php_query() -> None:
    cmd = crm_update("deal", 42, {"TITLE": "A & B = c?", "UF_LIST": [1, 2], "OPENED": True})
    text = encode_command(cmd)
    method, _, query = text.partition("?")
    assert method == "crm.deal.update"
    assert parse_query(query) == {
        "id": "42",
        "fields": {"TITLE": "A & B = c?", "UF_LIST": ["1", "2"], "OPENED": "1"},
    }
    assert encode_command(crm_fields("deal")) == "crm.deal.fields"


def test_build_batch() -> None:
    batch = build_batch({"a": crm_get("deal", 1), "b": crm_delete("deal", 2)}, halt=True)
    assert batch.method == "batch"
    assert batch.params == {"halt": 1, "cmd": {"a": "crm.deal.get?id=1", "b": "crm.deal.delete?id=2"}}
    assert build_batch({"a": crm_get("deal", 1)}).params["halt"] == 0


def test_build_batch_limits() -> None:
    ok = {f"c{i}": crm_get("deal", i + 1) for i in range(MAX_BATCH_COMMANDS)}
    assert len(build_batch(ok).params["cmd"]) == 50
    too_many = {f"c{i}": crm_get("deal", i + 1) for i in range(MAX_BATCH_COMMANDS + 1)}
    with pytest.raises(ValueError, match="at most 50"):
        build_batch(too_many)
    with pytest.raises(ValueError, match="at least one"):
        build_batch({})
    with pytest.raises(ValueError, match="nested"):
        build_batch({"x": Command("batch", {})})
    with pytest.raises(ValueError, match="non-empty"):
        build_batch({"": crm_get("deal", 1)})


def test_parse_batch_mixed() -> None:
    result = {
        "result": {"add1": 394, "upd": True, "lst": [{"ID": "1"}]},
        "result_error": {"upd2": {"error": "", "error_description": "Not found"}},
        "result_total": {"lst": 120},
        "result_next": {"lst": 50},
        "result_time": {
            "add1": {"start": 1, "finish": 2, "duration": 0.5, "processing": 0.4, "operating": 3.2},
            "upd2": {"duration": 0.1},
        },
    }
    outer = TimeInfo(duration=1.0)
    parsed = parse_batch(result, ["add1", "upd", "upd2", "lst", "skipped"], time=outer)
    assert parsed.results == {"add1": 394, "upd": True, "lst": [{"ID": "1"}]}
    assert set(parsed.errors) == {"upd2"}
    assert parsed.errors["upd2"].error_class is ErrorClass.NOT_FOUND
    assert parsed.errors["upd2"].execution is Execution.EXECUTED
    assert parsed.not_run == {"skipped"}
    assert parsed.times["add1"] == TimeInfo(operating=3.2, duration=0.5, processing=0.4)
    assert parsed.times["upd2"] == TimeInfo(duration=0.1)
    assert parsed.totals == {"lst": 120}
    assert parsed.nexts == {"lst": 50}
    assert parsed.time == outer


def test_parse_batch_empty_sections_are_lists() -> None:
    result = {"result": [], "result_error": [], "result_total": [], "result_next": [], "result_time": []}
    parsed = parse_batch(result, ["a", "b"])
    assert parsed.results == {}
    assert parsed.errors == {}
    assert parsed.not_run == {"a", "b"}


def test_parse_batch_list_sections_for_numeric_names() -> None:
    result = {"result": [10, 11], "result_error": [], "result_time": [{"duration": 1}, {"duration": 2}]}
    parsed = parse_batch(result, ["0", "1"])
    assert parsed.results == {"0": 10, "1": 11}
    assert parsed.times["1"] == TimeInfo(duration=2.0)


def test_parse_batch_null_result_counts_as_ran() -> None:
    parsed = parse_batch({"result": {"a": None}}, ["a"])
    assert parsed.results == {"a": None}
    assert parsed.not_run == set()


def test_parse_batch_error_wins_over_result() -> None:
    parsed = parse_batch({"result": {"a": 1}, "result_error": {"a": {"error": "ERROR_CORE"}}}, ["a"])
    assert set(parsed.errors) == {"a"}
    assert parsed.results == {}


def test_parse_batch_empty_outer_result() -> None:
    assert parse_batch([], ["a"]).not_run == {"a"}


@pytest.mark.parametrize("bad", [None, "x", 5, [1], {"result": "x"}])
def test_parse_batch_malformed(bad: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_batch(bad, ["a"])


def test_parse_batch_redacts_command_errors() -> None:
    err = {"error": "", "error_description": "bad secret zz-top-secret-42"}
    parsed = parse_batch({"result_error": {"a": err}}, ["a"], secrets=["zz-top-secret-42"])
    assert "zz-top-secret-42" not in parsed.errors["a"].description


def test_parse_scalars() -> None:
    assert parse_id(394) == 394
    assert parse_id("395") == 395
    for bad in (None, True, 0, "x", {"id": 1}):
        with pytest.raises(ValueError, match="new id"):
            parse_id(bad)
    assert parse_bool(True) is True
    assert parse_bool(False) is False
    assert parse_bool("1") is True
    with pytest.raises(ValueError, match="boolean"):
        parse_bool(None)
    assert parse_item({"ID": "1"}) == {"ID": "1"}
    with pytest.raises(ValueError, match="object"):
        parse_item([])


def test_parse_list() -> None:
    page = parse_list([{"ID": "1"}], 51, 50)
    assert (page.items, page.total, page.next) == ([{"ID": "1"}], 51, 50)
    page = parse_list([], 0)
    assert (page.items, page.total, page.next) == ([], 0, None)
    assert parse_list({"items": [{"id": 1}]}).items == [{"id": 1}]
    with pytest.raises(ValueError, match="list"):
        parse_list([1])
