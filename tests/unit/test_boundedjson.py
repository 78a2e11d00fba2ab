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
