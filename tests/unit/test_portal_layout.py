"""Where each portal's work lives, and how portals are divided among worker processes (portal_layout), plus
the intake's check that an operation sits on its own portal's stream."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from bitrix_worker.defaults import StreamKeys
from bitrix_worker.intake import build_units
from bitrix_worker.operations import decode_payload
from bitrix_worker.portal_layout import assigned, owner, portal_dead_stream, portal_stream, portal_table
from bitrix_worker.values import Entry

portal_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,30}", fullmatch=True)
workers = st.lists(
    st.text("abcdefgh-0123456789", min_size=1, max_size=8), min_size=1, max_size=6, unique=True
)


@pytest.mark.parametrize(
    ("portal", "default", "stream", "dead", "table"),
    [
        (None, None, "ops", "dead", "bitrix_mapping"),
        ("acme", "acme", "ops", "dead", "bitrix_mapping"),  # the default portal: nothing changes
        ("acme", None, "ops:acme", "dead:acme", "bitrix_mapping__acme"),
        ("acme", "other", "ops:acme", "dead:acme", "bitrix_mapping__acme"),
    ],
)
def test_names(portal: str | None, default: str | None, stream: str, dead: str, table: str) -> None:
    assert portal_stream("ops", portal, default) == stream
    assert portal_dead_stream("ops", "dead", portal, default) == dead
    assert portal_table("bitrix_mapping", portal, default) == table


def test_cluster_dead_stream_follows_the_portal_stream_into_its_slot() -> None:
    dead = portal_dead_stream("ops", "{ops}:dead", "acme.bitrix24.ru", None)
    assert dead == "{ops:acme.bitrix24.ru}:dead"
    stream = portal_stream("ops", "acme.bitrix24.ru", None)
    keys = StreamKeys(stream=stream, dead=dead)
    assert key_slot(keys.dead.encode()) == key_slot(stream.encode()) == key_slot(keys.schedule.encode())


@given(portal_ids, portal_ids)
def test_tables_are_sql_names_and_tell_portals_apart(a: str, b: str) -> None:
    ta, tb = portal_table("bitrix_mapping", a, None), portal_table("bitrix_mapping", b, None)
    assert len(ta) <= 63
    assert ta.replace("_", "").isalnum()
    assert (ta == tb) == (a == b)


@given(st.lists(portal_ids, max_size=40, unique=True), workers)
def test_every_portal_has_exactly_one_owner(portals: list[str], live: list[str]) -> None:
    shares = [set(assigned(portals, live, w)) for w in live]
    assert sorted(p for share in shares for p in share) == sorted(portals)


@given(st.lists(portal_ids, min_size=1, max_size=40, unique=True), workers, st.text("xyz", min_size=1))
def test_a_new_worker_only_takes_portals_it_now_owns(portals: list[str], live: list[str], new: str) -> None:
    """Rendezvous: when a worker joins, a portal either stays where it was or moves to the newcomer."""
    if new in live:
        return
    for p in portals:
        before, after = owner(p, live), owner(p, [*live, new])
        assert after in (before, new)


def test_no_workers_no_owner() -> None:
    assert owner("acme", []) is None
    assert assigned(["acme"], [], "me") == ["acme"]  # a process counts itself live before its first beat


def _entry(payload: dict[str, object]) -> Entry:
    text = json.dumps(payload)
    return Entry("1-0", decode_payload(text).ident, {"payload": text.encode()})


@pytest.mark.parametrize(
    ("named", "serving", "poison"),
    [
        (None, "acme", False),  # no portal: the stream's own
        ("acme", "acme", False),
        ("other", "acme", True),
        ("other", None, False),  # a caller that does not check (tools reading the stream)
    ],
)
def test_an_operation_naming_another_portal_is_poison(
    named: str | None, serving: str | None, poison: bool
) -> None:
    payload: dict[str, object] = {"op": "create", "entity": "deal", "key": "k-1"}
    if named is not None:
        payload["portal"] = named
    units, bad = build_units([_entry(payload)], max_deliveries=5, at_ms=0, portal=serving)
    assert (len(bad), len(units)) == ((1, 0) if poison else (0, 1))
    if poison:
        assert f"names portal {named!r}" in bad[0].reason


@pytest.mark.parametrize("bad", ["", "a b", "{tag}", "x" * 201, "-lead"])
def test_a_portal_id_that_cannot_name_a_stream_is_refused(bad: str) -> None:
    from bitrix_worker.errors import PoisonMessage

    with pytest.raises(PoisonMessage, match="portal"):
        decode_payload(json.dumps({"op": "create", "entity": "deal", "key": "k", "portal": bad}))


def test_a_portal_loop_gets_its_stream_dead_letters_and_plan() -> None:
    from bitrix_worker.config import load_settings
    from bitrix_worker.fleet import portal_settings
    from bitrix_worker.portals.model import PLANS, PortalRecord

    base = load_settings(
        portal="main", stream="ops", dead_stream="{ops}:dead", redis_url="redis://localhost:6379/0"
    )
    record = PortalRecord("big", "webhook", "https://big.example.com/rest/", plan=PLANS["enterprise"])
    big = portal_settings(base, "big", record)
    assert (big.stream, big.dead_stream, big.portal_name) == ("ops:big", "{ops:big}:dead", "big")
    assert (big.rate_per_s, big.rate_burst) == (5.0, 250)
    main = portal_settings(base, "main", None)
    assert (main.stream, main.dead_stream, main.portal_name) == ("ops", "{ops}:dead", "main")
    assert big.keys.limiter(big.portal_name) != main.keys.limiter(main.portal_name)  # a limiter of its own


def test_a_producer_cannot_name_a_portal_that_cannot_name_a_stream() -> None:
    from bitrix_worker.producer import build_operation, for_portal

    op = build_operation("create", "deal", "k-1")
    assert for_portal(op, "acme").portal == "acme"
    assert for_portal(op, None) is op
    with pytest.raises(ValueError, match="portal"):
        for_portal(op, "{acme}")
