"""The metric families and their label names: a single-portal worker's exposition is pinned (README and
docs/operations.md document it, outside checks parse it); a multi-portal one adds a bounded ``portal``."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from bitrix_worker.events import EventFanout, WorkerEvents
from bitrix_worker.metrics import PrometheusEvents
from bitrix_worker.reasons import Reason
from bitrix_worker.taxonomy import ErrorClass

SINGLE = {
    "bitrix_worker_operations": {"outcome", "reason", "entity", "error_class"},
    "bitrix_worker_calls": {"method", "result"},
    "bitrix_worker_call_duration_seconds": {"le"},
    "bitrix_worker_end_to_end_seconds": {"le"},
    "bitrix_worker_retries_scheduled": {"error_class"},
    "bitrix_worker_dead_lettered": {"error_class"},
    "bitrix_worker_field_findings": {"kind", "action", "entity"},
    "bitrix_worker_limiter_wait_seconds": set(),
    "bitrix_worker_stream_length": set(),
    "bitrix_worker_pending": set(),
    "bitrix_worker_scheduled": set(),
    "bitrix_worker_dead_letter_size": set(),
    "bitrix_worker_waiting_for_refs": set(),
    "bitrix_worker_breaker_open": set(),
    "bitrix_worker_lag_seconds": set(),
    "bitrix_worker_gauge_refresh_errors": set(),
    "bitrix_worker_token_refreshes": {"result"},
}
PER_PORTAL = set(SINGLE) - {"bitrix_worker_end_to_end_seconds", "bitrix_worker_gauge_refresh_errors"}
READ_AT_SCRAPE = {  # per portal too, but set from Redis at scrape time (tests/integration/test_fleet_http.py)
    f"bitrix_worker_{g}"
    for g in ("stream_length", "pending", "scheduled", "dead_letter_size", "waiting_for_refs", "lag_seconds")
}


def _emit(events: WorkerEvents) -> None:
    events.outcome("applied", Reason.CREATED, "deal", None)
    events.outcome("dead_lettered", Reason.BUDGET_SPENT, "deal", ErrorClass.SERVER_ERROR)
    events.latency(1.5)
    events.call("batch", "ok", 0.2)
    events.retry(ErrorClass.SERVER_ERROR, 1.0)
    events.limiter_wait(0.3)
    events.breaker(True, "auth: INVALID_CREDENTIALS")
    events.field_finding("unknown_field", "reject", "deal")
    events.token_refresh("acme.bitrix24.com", "refreshed")


def _labels(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue
        names = out.setdefault(family.name, set())
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                names.update(sample.labels)
    return out


def test_a_single_portal_worker_exposes_the_documented_families_without_a_portal_label() -> None:
    events = PrometheusEvents()
    _emit(events)
    text = events.render().decode()
    assert _labels(text) == SINGLE
    assert "portal=" not in text
    assert events.for_portal("acme.bitrix24.com") is events  # never labelled in this mode


def test_a_multi_portal_process_labels_each_portal_up_to_the_cap_and_sums_the_rest_as_other() -> None:
    events = PrometheusEvents(portals=2)
    for pid in ("p-1", "p-2", "p-3", "p-4"):
        _emit(events.for_portal(pid))
    text = events.render().decode()
    labels = _labels(text)
    for family in PER_PORTAL - READ_AT_SCRAPE:
        assert labels[family] == SINGLE[family] | {"portal"}, family
    assert all(labels[family] == set() for family in READ_AT_SCRAPE)  # no sample before a scrape
    assert labels["bitrix_worker_end_to_end_seconds"] == {"le"}
    seen = {
        s.labels["portal"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if "portal" in s.labels
    }
    assert seen == {"p-1", "p-2", "other"}
    assert (
        'bitrix_worker_operations_total{entity="deal",error_class="none",outcome="applied",portal="other",'
        in text
    )
    assert 'portal="other",reason="created"} 2.0' in text
    assert 'bitrix_worker_breaker_open{portal="p-1"} 1.0' in text
    assert 'bitrix_worker_breaker_open{portal="other"}' not in text  # a sum the next scrape reads
    assert events.portal_label("p-2") == "p-2"  # a label, once given, stays for the process's life
    assert events.portal_label("p-9") == "other"


def test_only_a_registry_shaped_id_can_become_a_label() -> None:
    events = PrometheusEvents(portals=100)
    secret = "https://acme.bitrix24.com/rest/1/s3cr3t-hook/"
    for value in (secret, "acme bitrix", "{acme}", "", "x" * 201):
        assert events.portal_label(value) == "other", value
        events.for_portal(value).call("batch", "ok", 0.1)
    assert events.portal_label("acme.bitrix24.com:8443") == "acme.bitrix24.com:8443"
    assert "s3cr3t" not in events.render().decode()


def test_a_subscriber_of_its_own_still_sees_every_portals_events() -> None:
    class Count(WorkerEvents):
        def __init__(self) -> None:
            self.outcomes = 0

        def outcome(self, outcome: str, reason: Reason, entity: str, error_class: ErrorClass | None) -> None:
            self.outcomes += 1

    mine, metrics = Count(), PrometheusEvents(portals=10)
    fanout = EventFanout(metrics, mine)
    for pid in ("p-1", "p-2"):
        fanout.for_portal(pid).outcome("applied", Reason.CREATED, "deal", None)
    assert mine.outcomes == 2
    assert 'portal="p-1",reason="created"} 1.0' in metrics.render().decode()
