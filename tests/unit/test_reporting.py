"""A batch reported at once (``reporting.report_settled``) prints the lines and leaves the metrics that
0ef761d's ``report``, called per result by the delivery's loop, printed and left (kept below as the
reference): the same lines in the same order, the same exposition, the same tally."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from bitrix_worker.events import EventFanout, RunSummary, Tally, WorkerEvents
from bitrix_worker.intake import build_units
from bitrix_worker.loglines import RedactingHandler
from bitrix_worker.logs import configure_logging
from bitrix_worker.metrics import PrometheusEvents
from bitrix_worker.outcomes import Outcome, Refusal, Result, member_outcomes, stream_ms
from bitrix_worker.plan import Call
from bitrix_worker.reasons import Reason
from bitrix_worker.records import attempt_entry
from bitrix_worker.reporting import report, report_settled
from bitrix_worker.taxonomy import Classification, ErrorClass, Execution
from bitrix_worker.values import Entry

NOW_MS = 1_765_000_002_000
_STAMP = re.compile(r'(?<="timestamp": ")[^"]+|^\S+Z(?= )', re.MULTILINE)


def _old_report(r: Result, now_ms: int, *, events: WorkerEvents, log: Any, successes: bool = True) -> None:
    """0ef761d's reporting.report."""
    error_class = r.classification.error_class if r.classification else None
    cls = error_class.value if error_class else None
    if r.outcome is Outcome.RETRY:
        head = r.unit.head
        log.info(
            "retry scheduled",
            op=head.op.value,
            entity=head.entity.value,
            key=head.key,
            stream_id=r.unit.origin,
            operations=len(r.unit.members),
            reason=r.text,
            delay_s=round(r.delay_s, 3),
            error_class=cls,
            attempt=r.unit.attempts,
        )
        return
    attempts = r.unit.attempts
    for f in member_outcomes(r):
        m = r.unit.members[f.index]
        operation = m.operation
        entity = operation.entity.value
        c = r.classification_of(f.index)
        events.outcome(f.outcome.value, f.reason, entity, c.error_class if c else None)
        events.latency(max(0.0, (now_ms - stream_ms(m.origin)) / 1000))
        fields = {
            "op": operation.op.value,
            "entity": entity,
            "key": operation.key,
            "stream_id": m.origin,
            "attempts": attempts,
            "error_class": c.error_class.value if c else None,
        }
        if f.outcome is Outcome.DEAD:
            log.error("dead-lettered", reason=f.text, **fields)
        elif f.outcome is Outcome.SKIPPED:
            (log.info if successes else log.debug)("skipped", reason=f.text, **fields)
        else:
            (log.info if successes else log.debug)("applied", reason=f.text, bitrix_id=r.bitrix_id, **fields)


def _old_loop(
    results: list[Result], settled: list[bool], now: int, *, events: WorkerEvents, log: Any, successes: bool
) -> None:
    """0ef761d's delivery.finish, after settling."""
    for r, ok in zip(results, settled, strict=True):
        if ok:
            _old_report(r, now, events=events, log=log, successes=successes)
        else:
            log.warning("unit was reclaimed by another worker; its outcome is theirs", ident=r.unit.ident)


def _new_loop(
    results: list[Result], settled: list[bool], now: int, *, events: WorkerEvents, log: Any, successes: bool
) -> None:
    report_settled(results, settled, now, events=events, log=log, successes=successes)


def _one_by_one(
    results: list[Result], settled: list[bool], now: int, *, events: WorkerEvents, log: Any, successes: bool
) -> None:
    """``report`` per result, as bench/cost_micro.py calls it."""
    for r, ok in zip(results, settled, strict=True):
        if ok:
            report(r, now, events=events, log=log, successes=successes)
        else:
            log.warning("unit was reclaimed by another worker; its outcome is theirs", ident=r.unit.ident)


Loop = Callable[..., None]


def _entry(i: int, op: str, entity: str, key: str, version: int) -> Entry:
    payload = {"op": op, "entity": entity, "key": key, "fields": {"TITLE": f"t{i}"}, "version": version}
    if op == "delete":
        del payload["fields"]
    return Entry(f"1765000000{i:03d}-{i}", f"{entity}:{key}", {"payload": json.dumps(payload).encode()})


def _batch() -> tuple[list[Result], list[bool]]:
    """Every shape a settled batch holds: applied, skipped, dead-lettered with a class, a retry, a unit of
    several operations with a stale and a refused one, a smart-process entity, one reclaimed meanwhile."""
    shapes = [
        ("update", "deal", "a"),
        ("create", "contact", "b"),
        ("delete", "company", "c"),
        ("upsert", "lead", "d"),
        ("update", "deal", "m"),
        ("update", "deal", "m"),
        ("update", "deal", "m"),
        ("create", "item:1032", "e"),
        ("update", "deal", "f"),
        ("create", "deal", "g"),
        ("update", "deal", "h"),
    ]
    entries = [_entry(i, op, entity, key, i) for i, (op, entity, key) in enumerate(shapes)]
    units, poison = build_units(entries, max_deliveries=5, at_ms=NOW_MS - 1000)
    assert poison == []
    by_key = {u.head.key: u for u in units}
    failed = Classification(ErrorClass.SERVER_ERROR, Execution.NOT_EXECUTED, 503, None, "down")
    refused = Classification(ErrorClass.INVALID_DATA, Execution.NOT_EXECUTED, None, None, "bad field")
    for attempt in (1, 2):  # failed attempts before this one
        by_key["c"].remember(attempt_entry(failed, attempt=attempt, method="crm.deal.add", at_ms=NOW_MS))
    by_key["m"].remember(attempt_entry(failed, attempt=1, method="batch", at_ms=NOW_MS))
    results = [
        Result(by_key["a"], Outcome.APPLIED, Reason.UPDATED, call=Call.UPDATE, bitrix_id=11),
        Result(by_key["b"], Outcome.SKIPPED, Reason.STALE),
        Result(
            by_key["c"], Outcome.DEAD, Reason.BUDGET_SPENT, detail="spent 5/5 = all", classification=failed
        ),
        Result(by_key["d"], Outcome.RETRY, Reason.RETRYING, classification=failed, delay_s=1.23456),
        Result(
            by_key["m"],
            Outcome.APPLIED,
            Reason.MOVED,
            bitrix_id=12,
            stale=(1,),
            refused={2: Refusal("invalid data: TITLE", refused)},
        ),
        Result(by_key["e"], Outcome.APPLIED, Reason.CREATED, bitrix_id=13),
        Result(by_key["f"], Outcome.DEAD, Reason.CREATE_FAILED),
        Result(by_key["g"], Outcome.APPLIED, Reason.ADOPTED, bitrix_id=14),
        Result(by_key["h"], Outcome.APPLIED, Reason.UPDATED, call=Call.UPDATE, bitrix_id=15),  # as "a"
    ]
    return results, [True, True, True, True, True, True, True, False, True]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


def _printed(loop: Loop, fmt: str, level: str, successes: bool) -> str:
    """What ``loop`` prints for the batch, our handler alone on the root logger (the worker's case)."""
    root = logging.getLogger()
    others = [h for h in root.handlers if type(h) is not RedactingHandler]
    for handler in others:
        root.removeHandler(handler)
    stream = io.StringIO()
    try:
        configure_logging(fmt=fmt, level=level, secrets=["0123456789abcdef"], stream=stream)  # type: ignore[arg-type]
        results, settled = _batch()
        log = structlog.get_logger("bitrix_worker.delivery")
        loop(results, settled, NOW_MS, events=WorkerEvents(), log=log, successes=successes)
    finally:
        for handler in others:
            root.addHandler(handler)
    return _STAMP.sub("<ts>", stream.getvalue())


@pytest.mark.parametrize(("fmt", "level", "successes"), [
    ("json", "info", True), ("json", "info", False), ("json", "debug", False), ("console", "info", True),
])  # fmt: skip
@pytest.mark.parametrize("loop", [_new_loop, _one_by_one])
def test_the_lines_are_the_ones_reported_one_result_at_a_time(
    loop: Loop, fmt: str, level: str, successes: bool
) -> None:
    ours, theirs = _printed(loop, fmt, level, successes), _printed(_old_loop, fmt, level, successes)
    assert ours == theirs
    assert ours.count("<ts>") == len(ours.splitlines()) >= 5
    if fmt == "json":
        events = [json.loads(line)["event"] for line in ours.splitlines()]
        assert events.count("applied") == (4 if successes or level == "debug" else 0)


def _exposition(events: PrometheusEvents) -> str:
    return "\n".join(line for line in events.render().decode().splitlines() if "_created" not in line)


@pytest.mark.parametrize("portals", [None, 2])
@pytest.mark.parametrize("loop", [_new_loop, _one_by_one])
def test_the_metrics_and_the_tally_are_the_ones_reported_one_result_at_a_time(
    loop: Loop, portals: int | None
) -> None:
    shown = []
    for run in (loop, _old_loop):
        metrics = PrometheusEvents(CollectorRegistry(), portals=portals)
        summary = RunSummary()
        events = EventFanout(Tally(summary), metrics).for_portal("p-1")
        for _ in range(3):  # the counters add up across batches
            results, settled = _batch()
            run(results, settled, NOW_MS, events=events, log=structlog.get_logger("test"), successes=True)
        shown.append((_exposition(metrics), summary.outcomes))
    assert shown[0] == shown[1]
    assert shown[0][1] == {"applied": 12, "skipped": 6, "dead_lettered": 9}
    assert 'outcome="dead_lettered"' in shown[0][0]


class _Calls(WorkerEvents):
    def __init__(self) -> None:
        self.outcomes_seen: list[tuple[Any, ...]] = []
        self.latencies: list[float] = []

    def outcome(self, outcome: str, reason: Reason, entity: str, error_class: ErrorClass | None) -> None:
        self.outcomes_seen.append((outcome, reason, entity, error_class))

    def latency(self, enqueued_to_done_s: float) -> None:
        self.latencies.append(enqueued_to_done_s)


def test_a_subscriber_of_its_own_still_gets_a_call_per_operation() -> None:
    """``WorkerEvents.outcomes`` by default: each operation's ``outcome`` (grouped), then its ``latency``."""
    seen = []
    for run in (_new_loop, _old_loop):
        calls = _Calls()
        results, settled = _batch()
        run(
            results,
            settled,
            NOW_MS,
            events=EventFanout(calls),
            log=structlog.get_logger("test"),
            successes=True,
        )
        seen.append(calls)
    ours, theirs = seen
    assert sorted(map(repr, ours.outcomes_seen)) == sorted(map(repr, theirs.outcomes_seen))
    assert len(ours.outcomes_seen) == 9
    assert ours.latencies == theirs.latencies
