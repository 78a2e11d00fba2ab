"""PHP-style query strings: known vectors (as PHP http_build_query / parse_str give them) and a round trip."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitrix_worker.bitrix.querystring import encode_query, parse_query


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"id": 5}, "id=5"),
        (
            {"fields": {"TITLE": "x", "UF_A": [1, 2]}, "id": 5},
            "fields[TITLE]=x&fields[UF_A][0]=1&fields[UF_A][1]=2&id=5",
        ),
        ({"a": True, "b": False}, "a=1&b=0"),
        ({"a": None, "b": [], "c": {}, "d": "x"}, "d=x"),
        ({"q": "a b&c=d/é"}, "q=a+b%26c%3Dd%2F%C3%A9"),
        ({"f": 1.5, "g": 2.0, "h": -3}, "f=1.5&g=2&h=-3"),
        ({"filter": {"=ORIGIN_ID": "ext-1", ">=ID": 10}}, "filter[%3DORIGIN_ID]=ext-1&filter[%3E%3DID]=10"),
        ({"rows": [{"A": 1}, {"A": 2}]}, "rows[0][A]=1&rows[1][A]=2"),
        ({}, ""),
    ],
)
def test_encode_vectors(params: dict[str, Any], expected: str) -> None:
    assert encode_query(params) == expected


@pytest.mark.parametrize(
    ("qs", "expected"),
    [
        ("id=5", {"id": "5"}),
        (
            "fields[TITLE]=x&fields[UF_A][0]=1&fields[UF_A][1]=2&id=5",
            {"fields": {"TITLE": "x", "UF_A": ["1", "2"]}, "id": "5"},
        ),
        ("fields%5BTITLE%5D=a+b%26c", {"fields": {"TITLE": "a b&c"}}),
        ("a[]=1&a[]=2&a[]=3", {"a": ["1", "2", "3"]}),
        ("a=1&a=2", {"a": "2"}),
        ("flag&x=", {"flag": "", "x": ""}),
        ("a[1]=x&a[3]=y", {"a": {"1": "x", "3": "y"}}),
        ("filter[%3DORIGIN_ID]=ext-1", {"filter": {"=ORIGIN_ID": "ext-1"}}),
        ("", {}),
        ("&&=x&[b]=1", {}),
    ],
)
def test_parse_vectors(qs: str, expected: dict[str, Any]) -> None:
    assert parse_query(qs) == expected


def _php_strings(value: Any) -> Any:
    """What a round trip through a query string makes of a value: scalars become PHP strings."""
    if isinstance(value, dict):
        return {k: _php_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_php_strings(v) for v in value]
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-=%><!@ ]{0,12}", fullmatch=True)
_scalars = st.one_of(st.text(max_size=20), st.integers(-(10**12), 10**12), st.booleans())
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=4),
        st.dictionaries(_keys, children, min_size=1, max_size=4),
    ),
    max_leaves=20,
)


@given(st.dictionaries(_keys, _values, max_size=6))
def test_round_trip(params: dict[str, Any]) -> None:
    assert parse_query(encode_query(params)) == _php_strings(params)


@given(st.text(), st.text())
def test_names_and_values_are_quoted_as_quote_plus_quotes_them(name: str, value: str) -> None:
    """The encoder skips ``quote_plus`` for text it would return unchanged; the result must not differ."""
    from urllib.parse import quote_plus

    assert encode_query({"f": {name: value}}) == f"f[{quote_plus(name)}]={quote_plus(value)}"


def _reference_query(params: Any) -> str:
    """The encoder as it was before its fast paths (commit 0ef761d, with ``quote_plus`` for every text):
    the batch wire format must stay byte for byte what it was."""
    from collections.abc import Mapping
    from urllib.parse import quote_plus

    def scalar(value: Any) -> str:
        if value is True:
            return "1"
        if value is False:
            return "0"
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return str(value)

    def flatten(prefix: str, value: Any, out: list[str]) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for key, item in value.items():
                flatten(f"{prefix}[{quote_plus(str(key))}]", item, out)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                flatten(f"{prefix}[{index}]", item, out)
        else:
            out.append(f"{prefix}={quote_plus(scalar(value))}")

    out: list[str] = []
    for key, value in params.items():
        flatten(quote_plus(str(key)), value, out)
    return "&".join(out)


class _Stage(StrEnum):
    WON = "WON"
    LOST = "LOST:é"


class _Flag(IntEnum):
    ON = 1


_any_keys = st.one_of(st.text(max_size=8), st.integers(-5, 5), _keys)
_any_scalars = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.from_regex(r"[A-Za-z0-9_.~-]{0,10}", fullmatch=True),
    st.integers(),
    st.booleans(),
    st.floats(),
    st.sampled_from([_Stage.WON, _Stage.LOST, _Flag.ON]),
)
_any_values = st.recursive(
    _any_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(_any_keys, children, max_size=3),
    ),
    max_leaves=16,
)


@given(st.dictionaries(_any_keys, _any_values, max_size=5))
def test_the_encoder_writes_what_the_reference_writes(params: dict[Any, Any]) -> None:
    assert encode_query(params) == _reference_query(params)
