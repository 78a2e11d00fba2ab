"""When the mapping store can vouch that a key it does not know was never created, as a table."""

from __future__ import annotations

import pytest

from bitrix_worker.vouching import StoreRecord, store_verdict

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
