"""When the mapping store can vouch that a key it does not know was never created, as a table."""

from __future__ import annotations

import pytest

from bitrix_worker.vouching import StoreRecord, StoreUse, sqlite_on_several_hosts, store_verdict

MINE = "store-a"


@pytest.mark.parametrize(
    ("recorded", "fence", "history", "others", "vouched", "refused"),
    [
        (None, 0, False, {}, True, False),  # a new stream: this store is its store
        (None, 7, True, {}, True, False),  # a stream an older version ran on: recorded as it is
        (StoreRecord(MINE, 10, True), 10, True, {}, True, False),  # the same store, every write there
        (StoreRecord(MINE, 10, True), 12, True, {}, True, False),
        (StoreRecord(MINE, 10, True), 9, True, {}, False, False),  # restored from a backup: writes missing
        (StoreRecord("store-b", 10, True), 10, True, {}, False, False),  # a new or different store
        (StoreRecord(MINE, 10, False), 10, True, {}, False, False),  # still not vouched for
        (StoreRecord(MINE, 10, True), 10, True, {"w2": MINE}, True, False),  # one shared store, two workers
        (StoreRecord(MINE, 10, True), 10, True, {"w2": "store-b"}, False, True),  # two stores at once
    ],
)
def test_store_verdict(  # noqa: PLR0917 - one parameter per column
    recorded: StoreRecord | None,
    fence: int,
    history: bool,
    others: dict[str, str],
    vouched: bool,
    refused: bool,
) -> None:
    v = store_verdict(recorded, MINE, fence, stream_has_history=history, live_other_stores=others)
    assert v.vouched is vouched
    assert (v.refuse is not None) is refused
    if refused:
        assert "PostgreSQL" in (v.refuse or "")
    if v.record is not None:
        assert v.record.store_id == MINE
        assert v.record.fence >= fence


SQLITE_A = StoreUse(MINE, "host-a", sqlite=True)


@pytest.mark.parametrize(
    ("me", "others", "refused"),
    [
        (SQLITE_A, {}, False),  # alone
        (SQLITE_A, {"w2": StoreUse(MINE, "host-a", sqlite=True)}, False),  # one file, one host (WAL)
        (SQLITE_A, {"w2": StoreUse(MINE, "host-b", sqlite=True)}, True),  # a copied file on another host
        (SQLITE_A, {"w2": StoreUse("store-b", "host-b", sqlite=True)}, True),  # separate files
        (SQLITE_A, {"w2": StoreUse("pg", "host-b", sqlite=False)}, True),  # SQLite here, PostgreSQL there
        (StoreUse("pg", "host-a"), {"w2": StoreUse("pg", "host-b")}, False),  # one PostgreSQL, many hosts
        (SQLITE_A, {"w2": StoreUse(MINE)}, False),  # an older worker: its host is unknown
    ],
)
def test_sqlite_on_several_hosts(me: StoreUse, others: dict[str, StoreUse], refused: bool) -> None:
    why = sqlite_on_several_hosts(me, others)
    assert (why is not None) == refused
    if why is not None:
        assert "host-b" in why
        assert "PostgreSQL" in why


@pytest.mark.parametrize(
    "use", [SQLITE_A, StoreUse("pg", "host-b"), StoreUse("id with {brace", "h", sqlite=True)]
)
def test_store_use_round_trips(use: StoreUse) -> None:
    assert StoreUse.decode(use.encode()) == use


@pytest.mark.parametrize("raw", ["3f2a9c", "{not json", '{"store": 5}', "[]"])
def test_an_older_or_odd_store_line_reads_as_a_store_of_unknown_host(raw: str) -> None:
    assert StoreUse.decode(raw).host is None
