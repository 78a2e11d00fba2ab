"""Property: arbitrary entries beside valid ones never stop the valid ones, and every entry ends exactly once.

Hypothesis writes entries of any shape (any JSON including deep nesting, lone surrogates, huge and
non-finite numbers; any bytes; any extra stream fields, including the names the worker's own entries use)
between valid creates; a real worker on a real Redis and the emulator runs until idle. Then every valid
create is applied, every entry has exactly one final outcome (an outcome record, or for an entry without a
readable key its dead letter), and nothing is left pending, parked, held or remembered.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from harness import Bench
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitrix_worker.redis.scripts import load_source

# every code point, surrogates included (json.dumps escapes them as \udXXX, as JavaScript emits them)
any_char = st.one_of(st.characters(), st.characters(categories=["Cs"]))
any_text = st.text(any_char, max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
)
any_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
op_shaped = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["create", "update", "upsert", "delete"]) | any_text,
        "entity": st.sampled_from(["deal", "contact"]) | any_text,
        "key": st.sampled_from(["k1", "k2", "K\ud800"]) | any_text,
    },
    optional={
        "fields": st.dictionaries(any_text, any_json, max_size=3) | any_json,
        "version": st.one_of(st.integers(-5, 2**70), st.floats(), any_text),
    },
)


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _deep(levels: int) -> bytes:
    """A valid-looking create nested ``levels`` deep (past ~990, Python's json itself gives up)."""
    return (
        b'{"op":"create","entity":"deal","key":"deep","fields":{"X":' + b"[" * levels + b"]" * levels + b"}}"
    )


payloads = st.one_of(
    op_shaped.map(_dump), any_json.map(_dump), st.integers(1, 2500).map(_deep), st.binary(max_size=40)
)
extra_names = st.sampled_from(["unit", "held", "ident", "history", "replayed_from", "error"]) | st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=8
)
extra_fields = st.dictionaries(
    extra_names.filter(lambda n: n != "payload"), st.binary(max_size=30), max_size=3
)
hostile = st.tuples(st.one_of(st.none(), payloads), extra_fields)


async def check(bench: Bench, entries: list[tuple[bytes | None, dict[str, bytes]]], batch: int) -> None:
    run = uuid.uuid4().hex[:8]
    bench.with_settings(
        stream=f"{bench.settings.stream}:{run}",
        dead_stream=f"{bench.settings.dead_stream}:{run}",
        database_url=f"sqlite+aiosqlite:///{bench.tmp / (run + '.sqlite3')}",
        batch_size=batch,
    )
    valid: list[str] = []
    ids: list[str] = []
    for i, (payload, extra) in enumerate(entries):
        valid.append(await bench.enqueue("create", f"v-{run}-{i}", {"TITLE": "ok"}))
        fields: dict[str, bytes] = dict(extra)
        if payload is not None:
            fields["payload"] = payload
        if fields:
            ids.append(await bench.enqueue_raw(fields))
    ids += valid
    await bench.run(timeout_s=60)

    outcomes = await bench.outcomes()
    records = Counter(o["stream_id"] for o in outcomes)
    dead = Counter(
        json.loads(f[b"error"])["stream_id"] for _, f in await bench.redis.xrange(bench.settings.dead_stream)
    )
    assert all(n == 1 for n in records.values()), records
    assert all(n == 1 for n in dead.values()), dead
    assert set(records) | set(dead) == set(ids), "every entry has a final outcome"
    assert set(records) | set(dead) <= set(ids)
    applied = {o["stream_id"] for o in outcomes if o["outcome"] == "applied"}
    assert set(valid) <= applied, "every valid operation is applied"
    k = bench.settings.keys
    assert await bench.redis.xlen(k.stream) == 0
    assert (await bench.redis.xpending(k.stream, bench.settings.group))["pending"] == 0
    assert await bench.redis.hlen(k.holds) == 0
    assert await bench.redis.hlen(k.parked) == 0
    assert await bench.redis.hlen(k.sent) == 0
    assert await bench.redis.hkeys(k.own) == [b"~since"]


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(entries=st.lists(hostile, min_size=1, max_size=6), batch=st.sampled_from([1, 4, 50]))
async def test_hostile_entries_never_stop_valid_ones(
    bench: Bench, entries: list[tuple[bytes | None, dict[str, bytes]]], batch: int
) -> None:
    await check(bench, entries, batch)


@pytest.mark.slow
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(entries=st.lists(hostile, min_size=1, max_size=25), batch=st.sampled_from([1, 4, 50]))
async def test_hostile_entries_never_stop_valid_ones_at_length(
    bench: Bench, entries: list[tuple[bytes | None, dict[str, bytes]]], batch: int
) -> None:
    await check(bench, entries, batch)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.binary(max_size=12)
    | st.text(max_size=6).map(lambda t: t.encode())
    | st.sampled_from([b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe0\x80\x80", b"\xf0\x9f\x98"])
)
async def test_lua_and_python_agree_on_what_is_utf8(bench: Bench, raw: bytes) -> None:
    """The ident check in turns.lua accepts exactly what Python's strict UTF-8 codec accepts."""
    script = load_source("turns") + "\nreturn valid_utf8(ARGV[1]) and 1 or 0"
    accepted = bool(await bench.redis.eval(script, 0, raw))
    try:
        raw.decode("utf-8")
        python = True
    except UnicodeDecodeError:
        python = False
    assert accepted == python
