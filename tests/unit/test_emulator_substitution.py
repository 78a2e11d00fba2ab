"""The emulator's batch substitution and PHP casts, as tables (no HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from bitrix_worker.emulator.php import is_numeric, php_int, php_string
from bitrix_worker.emulator.substitution import substitute

RESULTS: dict[str, dict[str, Any]] = {
    "result": {
        "contact": 7,
        "find": [{"ID": "12", "TITLE": "t", "ORIGIN_ID": None}],
        "item": {"item": {"id": 5, "title": "Box"}},
        "name": "Ann",
        "price": 9.5,
    },
    "total": {"find": 1},
    "next": {},
    "time": {},
    "error": {"bad": {"error": "", "error_description": "Not found"}},
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$result[contact]", 7),  # a whole value keeps its type
        ("$result[find][0][ID]", "12"),
        ("$result[item][item][id]", 5),
        ("$result[item][item]", {"id": 5, "title": "Box"}),
        ("$total[find]", 1),
        ("$error[bad][error_description]", "Not found"),
        ("deal of $result[name]", "deal of Ann"),  # embedded: strings are spliced
        ("id-$result[contact]", "id-7"),  # numbers become strings
        ("$result[price] EUR", "9.5 EUR"),
        ("x $result[item] y", "x $result[item] y"),  # an array cannot be spliced: the text stays
        ("$result", "$result"),  # no [key]: left alone
        ("$RESULT[contact]", None),  # the section is looked up as written: nothing there
        ("$result[find][0][ORIGIN_ID]", {"ID": "12", "TITLE": "t", "ORIGIN_ID": None}),  # null stops the walk
        ("$result[name][0]", "A"),  # a string is indexable
        ("no reference", "no reference"),
        # the trap: a failed (absent) command yields every earlier result
        ("$result[missing]", RESULTS["result"]),
        ("$result[missing][ID]", RESULTS["result"]),
        ("$next[missing]", {}),
    ],
)
def test_substitution(value: str, expected: Any) -> None:
    assert substitute({"p": value}, RESULTS) == {"p": expected}


def test_substitution_walks_nested_params_but_not_names() -> None:
    params = {"fields": {"CONTACT_IDS": ["$result[contact]", "3"], "$result[name]": "k"}, "id": 4}
    assert substitute(params, RESULTS) == {"fields": {"CONTACT_IDS": [7, "3"], "$result[name]": "k"}, "id": 4}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 0),
        (True, 1),
        (False, 0),
        (5, 5),
        (5.9, 5),
        ("12", 12),
        (" 12abc", 12),
        ("abc", 0),
        ("1e3", 1000),
        ([], 0),
        ({}, 0),
        ([0], 1),
        ({"contact": 7}, 1),  # the trap's cast
        (float("nan"), 0),
    ],
)
def test_php_int(value: Any, expected: int) -> None:
    assert php_int(value) == expected


def test_php_numeric_and_string() -> None:
    assert [is_numeric(v) for v in (1, 1.5, "2", " 3.5", "1e3", "x", True, None, "")] == [
        True,
        True,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    assert [php_string(v) for v in (1, 2.0, 2.5, True, False, None, "s")] == [
        "1",
        "2",
        "2.5",
        "1",
        "",
        "",
        "s",
    ]
