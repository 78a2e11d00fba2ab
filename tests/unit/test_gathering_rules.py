"""The gathering's arithmetic (no I/O): how many entries a claim takes, what a batch keeps, when held
entries go."""

from __future__ import annotations

from bitrix_worker.gathering import Batch, Gathering
from bitrix_worker.values import Entry


def entries(*ids: str) -> list[Entry]:
    return [Entry(i, f"deal:{i}", {}) for i in ids]


def test_a_claim_takes_the_largest_recent_shortfall_more_within_a_fifth_of_a_batch() -> None:
    g = Gathering(batch_size=50, linger_s=2.0)
    assert g.want == 50
    g.shortfalls.extend([2, 0, 1])
    assert g.want == 52
    g.shortfalls.append(40)
    assert g.want == 60  # at most a fifth more
    g.shortfalls.extend([0] * 8)  # the window forgets
    assert g.want == 50


def test_a_batch_keeps_one_request_worth_and_hands_the_rest_back_in_order() -> None:
    g = Gathering(batch_size=3, linger_s=2.0)
    own = entries("a", "b", "c", "d", "e")
    ids = [e.id for e in own]
    batch = Batch(g, own, ids, now=10.0)
    # b makes no command (refused by validation): a, c, d fill the request; e goes back
    kept = batch.keep([(True, ["a"]), (False, ["b"]), (True, ["c"]), (True, ["d"]), (True, ["e"])])
    assert kept == 4
    assert [e.id for e in g.held] == ["e"]
    assert [e.id for e in own] == ["a", "b", "c", "d"]  # InFlight forgets only these
    assert ids == ["a", "b", "c", "d"]  # the "sent" mark does not count e
    assert list(g.shortfalls) == [1]
    assert g.ready(10.0, expecting=True) is False  # alone and more expected: it waits for company
    assert g.ready(12.0, expecting=True) is True  # not longer than the linger


def test_a_batch_that_fits_keeps_everything() -> None:
    g = Gathering(batch_size=3, linger_s=2.0)
    batch = Batch(g, entries("a", "b"), ["a", "b"])
    assert batch.keep([(True, ["a"]), (True, ["b"])]) == 2
    assert not g.held


def test_held_entries_go_when_full_or_when_nothing_more_is_expected() -> None:
    g = Gathering(batch_size=2, linger_s=2.0)
    g.add(entries("a"), now=0.0)
    assert g.room() == 1
    assert not g.ready(0.5, expecting=True)
    assert g.ready(0.5, expecting=False)
    g.add(entries("b"), now=0.6)
    assert g.ready(0.6, expecting=True)
    assert [e.id for e in g.take()] == ["a", "b"]
    assert not g.held
    assert not Gathering(batch_size=2, linger_s=0.0).ready(0.0, expecting=False)  # nothing held


def test_retries_this_process_scheduled_are_expected_while_due_within_the_linger() -> None:
    g = Gathering(batch_size=10, linger_s=4.0)
    assert not g.retry_due_within(100.0)
    g.scheduled(103.0)
    g.scheduled(110.0)
    assert g.retry_due_within(100.0)  # 103 is within 4 s
    assert not g.retry_due_within(103.5)  # 103 has passed (forgotten); 110 is 6.5 s away
    assert list(g.retries_due) == [110.0]
    assert g.retry_due_within(106.5)
