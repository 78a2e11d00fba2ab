"""Bounded JSON: every hostile payload is a reason, never an exception that escapes (RecursionError) or a
value the portal cannot take."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitrix_worker.boundedjson import UnreadableJson, loads
from bitrix_worker.errors import PoisonMessage
from bitrix_worker.operations import decode_payload

MB = 1 << 20


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 32 levels deep"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested more than 32 levels deep"),
        (b'"' + b"x" * MB + b'"', "bytes, more than the 1048576 allowed"),
        (b'{"a":"\\ud800"}', "a holds a lone UTF-16 surrogate"),
        (b'{"\\udfff":1}', "a name in the object holds a lone UTF-16 surrogate"),
        (b'{"a":[1,"x\\udc80"]}', "a[1] holds a lone UTF-16 surrogate"),
        (b'{"a":NaN}', "NaN is not a JSON number"),
        (b'{"a":-Infinity}', "-Infinity is not a JSON number"),
        (b'{"a":1e400}', "a is out of range (read as inf)"),
        (b'{"a":' + b"9" * 5000 + b"}", "is not JSON: Exceeds the limit"),
        (b"\xff", "is not UTF-8"),
        (b"{", "is not JSON"),
    ],
)
def test_hostile_json_is_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(UnreadableJson) as exc:
        loads(raw, max_bytes=MB)
    assert reason in str(exc.value)


def test_within_the_limits_it_is_plain_json() -> None:
    text = '{"a":' * 31 + '"\\ud83d\\ude00 \\u00e9"' + "}" * 31
    value = loads(text, max_bytes=MB)
    for _ in range(31):
        value = value["a"]
    assert value == "\U0001f600 \u00e9"
    assert loads('"[[[[" ', max_bytes=MB, max_depth=1) == "[[[["  # brackets inside strings do not nest


@pytest.mark.parametrize(("version", "ok"), [(2**63 - 1, True), (2**63, False), (-1, False)])
def test_version_is_bounded_by_what_the_mapping_store_holds(version: int, ok: bool) -> None:
    raw = json.dumps({"op": "update", "entity": "deal", "key": "k", "version": version})
    if ok:
        assert decode_payload(raw).version == version
    else:
        with pytest.raises(PoisonMessage, match="version"):
            decode_payload(raw)


@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_decode_payload_raises_nothing_but_poison(raw: bytes) -> None:
    with contextlib.suppress(PoisonMessage):  # anything else (RecursionError, UnicodeError) fails the test
        decode_payload(raw)


def _same(a: object, b: object) -> bool:
    """Equal values of the very same types, dict order and float sign included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(v, b[k]) for k, v in a.items())  # type: ignore[index]
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return repr(a) == repr(b)


_NUMBERS = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?\Z")
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=12,
)
_TEXTS = (
    st.builds(json.dumps, _JSON, ensure_ascii=st.booleans())
    | _NUMBERS
    | st.builds(str, st.integers(2**62, 2**66) | st.integers(-(2**66), -(2**62)))  # around 64 bits
    | st.builds("[{}]".format, st.lists(_NUMBERS, max_size=4).map(",".join))
    | st.builds('{{"a":{},"b":1,"a":{}}}'.format, _NUMBERS, _NUMBERS)  # a name twice: the last value wins
    | st.text(alphabet='{}[]",:0123456789.eE+- \t\nabtrulfsn\\u', max_size=30)
)


@given(_TEXTS)
def test_the_orjson_path_reads_what_json_reads(text: str) -> None:
    """``_plain`` (orjson) answers only where ``json`` gives the very same value, and ``loads`` then gives
    it; anything else takes the ``json`` path, whose wording a dead letter carries."""
    from bitrix_worker.boundedjson import _DECODER, _REFUSED, _plain

    value = _plain(text.encode("utf-8", errors="surrogatepass"))
    if value is _REFUSED:
        return
    assert _same(value, _DECODER.decode(text))
    assert _same(loads(text, max_bytes=MB), value)


def test_integers_beyond_64_bits_stay_exact() -> None:
    assert loads('{"a":18446744073709551616,"b":-9223372036854775809}', max_bytes=MB) == {
        "a": 18446744073709551616,
        "b": -9223372036854775809,
    }
    assert loads("[123456789012345678]", max_bytes=MB) == [123456789012345678]
