"""The emulated portal without HTTP: CRM store shapes and errors, list filters/paging, batch, fault engine."""

from __future__ import annotations

from typing import Any

import pytest

from bitrix_worker.emulator import EmulatorConfig, FaultConfig, SchemaConfig, UserFieldConfig
from bitrix_worker.emulator.errors import ApiError
from bitrix_worker.emulator.faults import FaultEngine
from bitrix_worker.emulator.portal import Portal


@pytest.fixture
def portal() -> Portal:
    user_fields = [UserFieldConfig(name=n, multiple=n == "UF_CRM_X") for n in ("UF_CRM_X", "UF_CRM_K")]
    schema = SchemaConfig(user_fields={"deal": user_fields, "lead": user_fields})
    return Portal(EmulatorConfig(crm_schema=schema))


def call(portal: Portal, method: str, **params: Any) -> Any:
    return portal.call(method, params)[0]


def error(portal: Portal, method: str, **params: Any) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as info:
        portal.call(method, params)
    return info.value.status, info.value.code, info.value.description


def test_add_get_shapes(portal: Portal) -> None:
    assert call(portal, "crm.deal.add", fields={"TITLE": "A", "OPPORTUNITY": 100, "NOPE": 1}).value == 1
    assert call(portal, "crm.deal.add", fields={"TITLE": "B"}).value == 2
    assert call(portal, "crm.contact.add", fields={"NAME": "C"}).value == 1  # IDs are per entity
    deal = call(portal, "crm.deal.get", id=1).value
    assert deal["ID"] == "1"
    assert deal["TITLE"] == "A"
    assert deal["OPPORTUNITY"] == "100.00"
    assert deal["ORIGINATOR_ID"] is None
    assert deal["ORIGIN_ID"] is None
    assert "NOPE" not in deal
    assert deal["DATE_CREATE"] == deal["DATE_MODIFY"]
    assert deal["DATE_CREATE"][:2] == "20"
    assert call(portal, "crm.deal.update", id="1", fields={"TITLE": "A2", "UF_CRM_X": [1, 2]}).value is True
    deal = call(portal, "crm.deal.get", ID="1").value
    assert deal["TITLE"] == "A2"
    assert deal["UF_CRM_X"] == ["1", "2"]
    assert call(portal, "crm.deal.delete", id=1).value is True
    assert error(portal, "crm.deal.get", id=1) == (400, "", "Not found")
    assert "ORIGIN_ID" in call(portal, "crm.deal.fields").value


@pytest.mark.parametrize(
    ("method", "params", "description"),
    [
        ("crm.deal.get", {"id": 99}, "Not found"),
        ("crm.deal.update", {"id": 99, "fields": {}}, "Not found"),
        ("crm.deal.delete", {"id": 99}, "Not found"),
        ("crm.deal.get", {}, "ID is not defined or invalid."),
        ("crm.deal.get", {"id": 0}, "ID is not defined or invalid."),
        ("crm.deal.delete", {"id": "abc"}, "ID is not defined or invalid."),
        ("crm.deal.add", {"fields": "x"}, "Parameter 'fields' must be array."),
        ("crm.deal.add", {}, "Parameter 'fields' must be array."),
        ("crm.deal.add", {"fields": {"CURRENCY_ID": "XXX"}}, 'Invalid value for the "Currency" field'),
        ("crm.deal.add", {"fields": {"OPPORTUNITY": "lots"}}, 'Invalid value for the "Amount" field'),
        ("crm.deal.list", {"filter": "x"}, "Parameter 'filter' must be array."),
    ],
)
def test_crm_errors(portal: Portal, method: str, params: dict[str, Any], description: str) -> None:
    assert error(portal, method, **params) == (400, "", description)


def test_list_filters(portal: Portal) -> None:
    for i in range(1, 8):
        fields = {"TITLE": f"Deal {i}", "OPPORTUNITY": i * 10, "CURRENCY_ID": "USD" if i % 2 else "EUR"}
        if i <= 3:
            fields |= {"ORIGINATOR_ID": "worker", "ORIGIN_ID": f"ext-{i}"}
        call(portal, "crm.deal.add", fields=fields)

    def ids(flt: dict[str, Any], **extra: Any) -> list[str]:
        return [r["ID"] for r in call(portal, "crm.deal.list", filter=flt, **extra).value]

    assert ids({"=ORIGINATOR_ID": "worker", "=ORIGIN_ID": "ext-2"}) == ["2"]
    assert ids({"ORIGIN_ID": "ext-3"}) == ["3"]
    assert ids({"=ORIGIN_ID": "ext-9"}) == []
    assert ids({">OPPORTUNITY": 50}) == ["6", "7"]
    assert ids({">=OPPORTUNITY": "50", "<=OPPORTUNITY": 60}) == ["5", "6"]
    assert ids({"<ID": 3}) == ["1", "2"]
    assert ids({"!CURRENCY_ID": "USD"}) == ["2", "4", "6"]
    assert ids({"!=CURRENCY_ID": "EUR", "@ID": [1, 2, 3]}) == ["1", "3"]
    assert ids({"!@ID": [1, 2, 3, 4, 5]}) == ["6", "7"]
    assert ids({"%TITLE": "deal 1"}) == ["1"]
    assert ids({"=%TITLE": "Deal %"}) == [str(i) for i in range(1, 8)]
    assert ids({"=ORIGIN_ID": ""}) == ["4", "5", "6", "7"]
    assert ids({"ID": 4}) == ["4"]
    assert ids({"UNKNOWN_FIELD": "x"}) == [str(i) for i in range(1, 8)]  # the portal ignores it
    assert ids({}, order={"OPPORTUNITY": "DESC"})[:2] == ["7", "6"]
    # the ORIGIN_ID index follows updates and deletes
    call(portal, "crm.deal.update", id=2, fields={"ORIGIN_ID": "ext-22"})
    assert ids({"=ORIGIN_ID": "ext-2"}) == []
    assert ids({"=ORIGIN_ID": "ext-22"}) == ["2"]
    portal.store.remove("deal", 2)
    assert ids({"=ORIGIN_ID": "ext-22"}) == []


def test_list_select_and_paging(portal: Portal) -> None:
    for i in range(120):
        call(portal, "crm.lead.add", fields={"TITLE": f"L{i}", "UF_CRM_K": "v"})
    first = call(portal, "crm.lead.list", select=["TITLE"])
    assert len(first.value) == 50
    assert (first.total, first.next) == (120, 50)
    assert first.value[0] == {"ID": "1", "TITLE": "L0"}
    second = call(portal, "crm.lead.list", start=50, select=["*", "UF_*"])
    assert (second.total, second.next) == (120, 100)
    assert second.value[0]["UF_CRM_K"] == "v"
    assert second.value[0]["STATUS_ID"] == "NEW"
    last = call(portal, "crm.lead.list", start="100")
    assert (len(last.value), last.total, last.next) == (20, 120, None)
    assert "UF_CRM_K" not in last.value[0]  # default select: standard fields only


def test_batch_sections_halt_and_length(portal: Portal) -> None:
    body = portal.batch({"cmd": {}}).body
    assert body == {k: [] for k in ("result", "result_error", "result_total", "result_next", "result_time")}
    cmd = {
        "a": "crm.deal.add?fields[TITLE]=x&fields[UF_CRM_T][0]=1",
        "b": "crm.deal.get?id=99",
        "c": "crm.deal.list?filter[%3DTITLE]=x&select[0]=TITLE",
        "d": "batch?cmd[0]=crm.deal.get%3Fid%3D1",
        "e": "no.such.method",
    }
    body = portal.batch({"cmd": cmd, "halt": 0}).body
    assert body["result"]["a"] == 1
    assert body["result"]["c"] == [{"ID": "1", "TITLE": "x"}]
    assert body["result_total"] == {"c": 1}
    assert body["result_next"] == []
    assert body["result_error"] == {
        "b": {"error": "", "error_description": "Not found"},
        "d": {
            "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "error_description": "Method is not allowed for batch usage",
        },
        "e": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
    }
    assert set(body["result_time"]) == {"a", "c"}
    halted = portal.batch({"cmd": cmd, "halt": "1"}).body
    assert list(halted["result"]) == ["a"]
    assert list(halted["result_error"]) == ["b"]  # c, d, e never ran
    assert portal.store.tables["deal"].next_id == 3

    many = [f"crm.contact.add?fields[NAME]=n{i}" for i in range(55)]
    body = portal.batch({"cmd": many}).body
    assert isinstance(body["result"], list)
    assert len(body["result"]) == 50
    assert body["result_error"] == {
        str(i): {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"}
        for i in range(50, 55)
    }
    assert len(portal.store.tables["contact"].rows) == 50
    assert portal.stats.calls["crm.contact.add"] == {"ok": 50, "ERROR_BATCH_LENGTH_EXCEEDED": 5}


def test_fault_sequence_scope_and_max_hits() -> None:
    cfg = FaultConfig.model_validate(
        {
            "rules": [
                {"method": "crm.deal.add", "sequence": ["500", "ok", None, "reset"], "scope": "request"},
                {"method": "crm.deal.*", "kind": "not_found", "scope": "command", "max_hits": 2},
            ]
        }
    )
    engine = FaultEngine(cfg, seed=1, now=0.0)
    assert [engine.pick("crm.deal.add", command=False) for _ in range(5)] == [
        "500",
        None,
        None,
        "reset",
        None,
    ]
    assert [engine.pick("crm.deal.update", command=True) for _ in range(3)] == [
        "not_found",
        "not_found",
        None,
    ]
    assert engine.pick("crm.deal.update", command=False) is None
    assert engine.injected == {"500": 1, "reset": 1, "not_found": 2}


def test_fault_probability_is_seeded() -> None:
    cfg = FaultConfig.model_validate({"rules": [{"method": "*", "kind": "502", "probability": 0.3}]})

    def pattern(seed: int) -> list[str | None]:
        engine = FaultEngine(cfg, seed=seed, now=0.0)
        return [engine.pick("crm.deal.add", command=False) for _ in range(200)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert 30 < pattern(7).count("502") < 90


def test_auth_outage_window_and_toggle() -> None:
    engine = FaultEngine(
        FaultConfig.model_validate({"auth_outage": {"start_s": 5, "duration_s": 10}}), None, 100.0
    )
    assert [engine.auth_down(t) for t in (104.9, 105.0, 114.9, 115.0)] == [False, True, True, False]
    engine.update(FaultConfig.model_validate({"auth_outage": True}), now=200.0)
    assert engine.auth_down(10_000.0)
    engine.update(FaultConfig.model_validate({"auth_outage": False}), now=300.0)
    assert not engine.auth_down(300.0)


def test_latency_distributions() -> None:
    def draw(latency: dict[str, Any], method: str = "crm.deal.add") -> list[float]:
        engine = FaultEngine(FaultConfig.model_validate({"latency": latency}), seed=3, now=0.0)
        return [engine.latency(method) for _ in range(200)]

    assert set(draw({"dist": "fixed", "s": 0.25})) == {0.25}
    uniform = draw({"dist": "uniform", "min_s": 0.1, "max_s": 0.2})
    assert all(0.1 <= v <= 0.2 for v in uniform)
    lognormal = sorted(draw({"dist": "lognormal", "median_s": 0.05, "sigma": 0.5, "cap_s": 1}))
    assert 0.03 < lognormal[100] < 0.08
    assert set(draw({"dist": "fixed", "s": 1, "method": "batch"})) == {0.0}


def test_invalid_fault_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        FaultConfig.model_validate({"rules": [{"method": "*"}]})
