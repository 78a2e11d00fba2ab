"""Keep docs/errors.md true: every row of its three mapping tables classifies as the row says, and every entry
of the classifier's own tables appears in the doc, so neither can change without the other."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bitrix_worker import classify
from bitrix_worker.classify import classify_command_error, classify_response
from bitrix_worker.config import Settings, env_name
from bitrix_worker.taxonomy import Classification, ErrorClass, Execution

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
TEXT = DOC.read_text(encoding="utf-8")

Row = list[str]

# What the "HTTP status" column of table 1 promises, as statuses to try (None: a command inside a batch).
STATUSES_ANY: list[int | None] = [200, 400, 401, 403, 404, 429, 500, 502, 503, None]
STATUSES_5XX: list[int | None] = [500, 502, 503, 504]
STATUSES_OTHER: list[int | None] = [200, 400, 401, 403, 429, None]
# Stand-ins for the status tokens of table 3 that name a range.
RANGE_5XX = [501, 505, 520, 599]
RANGE_2XX = [200, 201, 204]
ANYTHING_ELSE = [409, 418, 451]


def _table(heading: str) -> list[Row]:
    """The body rows of the first Markdown table after ``heading``, as lists of stripped cells."""
    start = TEXT.index(heading)
    rows: list[Row] = []
    started = False
    for line in TEXT[start:].splitlines()[1:]:
        if line.startswith("|"):
            started = True
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif started:
            break
    assert len(rows) > 2, f"no table under {heading!r}"
    return rows[2:]  # header and separator


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _classes(row: Row) -> tuple[ErrorClass, Execution]:
    return ErrorClass(row[2] if len(row) > 4 else row[1]), Execution(row[3] if len(row) > 4 else row[2])


def _body(code: str, description: str = "") -> bytes:
    return json.dumps({"error": code, "error_description": description}).encode()


def _classify(status: int | None, body: bytes) -> Classification | None:
    if status is None:
        return classify_command_error(json.loads(body))
    return classify_response(status, body)


def _assert_row(row: Row, status: int | None, body: bytes, expected: tuple[ErrorClass, Execution]) -> None:
    c = _classify(status, body)
    assert c is not None, f"{row[0]} with {status}: classified as success"
    where = "in a batch" if status is None else f"HTTP {status}"
    assert (c.error_class, c.execution) == expected, f"docs/errors.md row {row[0]!r}, {where}, body {body!r}"


CODE_ROWS = _table("### Table 1: by `error` code")
DESCRIPTION_ROWS = _table("### Table 2: by `error_description` when the code is empty")
STATUS_ROWS = _table("### Table 3: by HTTP status")


def _codes(row: Row) -> list[str]:
    """The codes a row of table 1 names; a ``*`` family is tried with a member nobody has listed."""
    return [code.replace("*", "SOMETHING_NEW") for code in _ticked(row[0])]


@pytest.mark.parametrize("row", CODE_ROWS, ids=lambda r: r[0][:40])
def test_every_code_row_classifies_as_documented(row: Row) -> None:
    statuses = {"any": STATUSES_ANY, "`5xx`": STATUSES_5XX}.get(row[1], STATUSES_OTHER)
    assert row[1] in {"any", "`5xx`"} or row[1].startswith("other"), f"unknown status column {row[1]!r}"
    expected = _classes(row)
    codes = _codes(row)
    assert codes, f"no code in row {row!r}"
    for code in codes:
        for spelling in (code, code.lower()):
            for status in statuses:
                _assert_row(row, status, _body(spelling, "some description"), expected)


@pytest.mark.parametrize("row", DESCRIPTION_ROWS, ids=lambda r: r[0])
def test_every_description_row_classifies_as_documented(row: Row) -> None:
    (description,) = _ticked(row[0])
    expected = _classes(row)
    for spelling in (description, description.upper(), description + ".", f"  {description}! "):
        for code in ("", None):
            for status in (200, 400, 403, 500, None):
                body = json.dumps({"error": code, "error_description": spelling}).encode()
                _assert_row(row, status, body, expected)


def _statuses(cell: str) -> list[int]:
    tokens = _ticked(cell)
    if not tokens:
        assert cell == "anything else", cell
        return ANYTHING_ELSE
    ranges = {"5xx": RANGE_5XX, "2xx": RANGE_2XX}
    return [s for t in tokens for s in (ranges[t] if t in ranges else [int(t)])]


@pytest.mark.parametrize("row", STATUS_ROWS, ids=lambda r: r[0])
def test_every_status_row_classifies_as_documented(row: Row) -> None:
    expected = _classes(row)
    bodies = [
        b"",
        b"<html><head><title>Gateway</title></head><body>nginx</body></html>",
        _body("SOME_CODE_NOBODY_HAS_SEEN", "whatever"),
        json.dumps({"result": None, "error_description": None}).encode(),
    ]
    for status in _statuses(row[0]):
        for body in bodies:
            _assert_row(row, status, body, expected)


def test_an_unrecognised_description_with_400_or_in_a_batch_is_invalid_data() -> None:
    body = _body("", "Parameter 'fields' must be array.")
    for status in (400, None):
        c = _classify(status, body)
        assert c is not None
        assert (c.error_class, c.execution) == (ErrorClass.INVALID_DATA, Execution.EXECUTED)
    c = classify_command_error({"error": "SOME_CODE_NOBODY_HAS_SEEN"})
    assert (c.error_class, c.execution) == (ErrorClass.SERVER_ERROR, Execution.AMBIGUOUS)


def test_the_doc_lists_every_code_description_and_status_the_classifier_knows() -> None:
    documented_codes = {code.upper() for row in CODE_ROWS for code in _ticked(row[0])}
    missing_codes = set(classify._BY_CODE) - documented_codes
    assert not missing_codes, f"codes classified but missing from docs/errors.md: {sorted(missing_codes)}"
    families = {f"{p}*" for p in classify._DATA_PREFIXES} | {f"*{s}" for s in classify._DATA_SUFFIXES}
    assert families <= documented_codes

    documented = {d.lower().rstrip(".!") for row in DESCRIPTION_ROWS for d in _ticked(row[0])}
    assert set(classify._BY_DESCRIPTION) <= documented, set(classify._BY_DESCRIPTION) - documented

    statuses = {s for row in STATUS_ROWS for s in _statuses(row[0])}
    known = set(classify._BY_STATUS) | set(classify._REDIRECT)
    assert known <= statuses, sorted(known - statuses)


def test_every_class_is_described_and_every_named_setting_exists() -> None:
    described = set(re.findall(r"^\| `([a-z_]+)` \|", TEXT, flags=re.MULTILINE))
    assert {c.value for c in ErrorClass} <= described
    assert {x.value for x in Execution} <= described

    named = set(re.findall(r"`(BITRIX_WORKER_[A-Z_]+)`", TEXT))
    real = {env_name(name) for name in Settings.model_fields}
    assert named <= real, f"docs/errors.md names settings that do not exist: {sorted(named - real)}"
    budgets = {env_name(name) for name in Settings.model_fields if name.startswith("retries_")}
    assert budgets <= named, f"budgets missing from docs/errors.md: {sorted(budgets - named)}"
