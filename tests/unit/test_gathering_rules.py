"""The gathering's arithmetic (no I/O): how many entries a claim takes, what a batch keeps, when held
entries go."""

from __future__ import annotations

import pytest

from bitrix_worker.gathering import RETRIES_REMEMBERED, Batch, Gathering
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
    g.scheduled(110.0)
    g.scheduled(103.0)
    assert g.retry_due_within(100.0)  # 103 is within 4 s
    assert not g.fell_due(100.0)  # nothing due yet: the claim needs no promotion first
    assert g.fell_due(103.5)  # 103 has passed: promote before claiming; then it is forgotten
    assert not g.fell_due(103.6)
    assert not g.retry_due_within(103.5)  # 110 is 6.5 s away
    assert g.retries_due == [110.0]
    assert g.retry_due_within(106.5)


def test_a_retry_due_but_not_yet_promoted_is_still_expected() -> None:
    # The miss that sent the tail's last retry alone: its due time passed between the claim's promotion and
    # the decision (or before the promotion timer's next tick). Until a claim has promoted it first, it is
    # expected: the held entries wait for it, and the next claim promotes and takes it.
    g = Gathering(batch_size=10, linger_s=2.0)
    g.scheduled(100.05)
    assert not g.fell_due(100.0)  # the claim at 100.0: not due yet
    g.add(entries("a", "b"), now=100.0)
    assert g.retry_due_within(100.08)  # the decision at 100.08: due, not promoted, still expected
    assert not g.ready(100.08, expecting=g.retry_due_within(100.08))
    assert g.fell_due(100.1)  # the next claim promotes it first
    assert not g.retry_due_within(100.1)


def test_while_holding_the_loop_looks_again_when_the_next_retry_falls_due() -> None:
    g = Gathering(batch_size=10, linger_s=2.0)
    g.add(entries("a"), now=100.0)
    assert g.wait_s(100.0) == pytest.approx(0.1)  # nothing scheduled: the poll
    g.scheduled(100.03)
    assert g.wait_s(100.0) == pytest.approx(0.03)
    assert g.wait_s(100.05) == 0.01  # already due: at once (the floor)
    assert g.fell_due(100.05)
    assert g.wait_s(101.95) == pytest.approx(0.05)  # no later than the linger's end


def test_only_the_soonest_due_times_are_kept_when_too_many() -> None:
    g = Gathering(batch_size=10, linger_s=2.0)
    for i in range(RETRIES_REMEMBERED + 1):
        g.scheduled(1000.0 - i)
    assert len(g.retries_due) == RETRIES_REMEMBERED // 2
    assert g.retries_due[0] == 1000.0 - RETRIES_REMEMBERED
    assert max(g.retries_due) < 1000.0 - RETRIES_REMEMBERED / 2
