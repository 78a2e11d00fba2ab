"""Load-aware placement of portals on worker processes (portal_layout.place) and the busy flag's hysteresis
(portal_layout.Backlog): tables for the cases a reader checks by hand, hypothesis for the properties."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitrix_worker.portal_layout import Backlog, assigned, owner, place

portal_ids = st.from_regex(r"p[0-9a-z]{1,6}", fullmatch=True)
worker_ids = st.lists(st.from_regex(r"w[0-9a-z]{1,4}", fullmatch=True), min_size=1, max_size=6, unique=True)


Layout = tuple[list[str], list[str], list[str]]  # portals, live workers, busy portals


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    portals = draw(st.lists(portal_ids, max_size=40, unique=True))
    busy = draw(st.lists(st.sampled_from(portals), unique=True)) if portals else []
    return portals, draw(worker_ids), busy


def _busy_counts(placed: dict[str, str], live: list[str], busy: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter(dict.fromkeys(live, 0))
    counts.update(placed[p] for p in busy)
    return counts


@pytest.mark.parametrize(
    ("portals", "busy", "expected"),
    [
        # one hot portal, two processes: it is alone on its process, the 5 quiet ones on the other
        (["a", "b", "c", "d", "e", "hot"], ["hot"], {"w1": ["hot"], "w2": ["a", "b", "c", "d", "e"]}),
        # two hot portals, two processes: one each, and the quiet ones by rendezvous over both
        (["a", "b", "c", "h1", "h2"], ["h1", "h2"], {"w1": ["a", "c", "h1"], "w2": ["b", "h2"]}),
        # three hot portals, two processes: 2 + 1, the quiet ones on the process with one
        (["a", "b", "h1", "h2", "h3"], ["h1", "h2", "h3"], {"w1": ["a", "b", "h3"], "w2": ["h1", "h2"]}),
        # a busy id that is not a portal (removed from the registry) changes nothing: plain rendezvous
        (["a", "b"], ["gone"], {"w1": ["a"], "w2": ["b"]}),
        (["a", "b"], [], {"w1": ["a"], "w2": ["b"]}),
    ],
)
def test_table(portals: list[str], busy: list[str], expected: dict[str, list[str]]) -> None:
    live = ["w1", "w2"]
    assert {w: assigned(portals, live, w, busy) for w in live} == expected


def test_without_busy_portals_placement_is_plain_rendezvous() -> None:
    portals = [f"p{i}" for i in range(50)]
    live = ["w1", "w2", "w3"]
    assert place(portals, live) == {p: owner(p, live) for p in portals}


def test_no_workers_no_placement() -> None:
    assert place(["a"], [], ["a"]) == {}
    assert assigned(["a"], [], "me", ["a"]) == ["a"]  # a process counts itself live before its first beat


@given(layouts(), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_order(layout: Layout, rnd: random.Random) -> None:
    portals, live, busy = layout
    shuffled = [list(x) for x in (portals, live, busy)]
    for x in shuffled:
        rnd.shuffle(x)
    assert place(portals, live, busy) == place(*shuffled)


@given(layouts())
def test_every_portal_is_served_exactly_once(layout: Layout) -> None:
    portals, live, busy = layout
    shares = [assigned(portals, live, w, busy) for w in live]
    assert sorted(p for share in shares for p in share) == sorted(portals)


@given(layouts())
def test_busy_portals_are_spread_within_one(layout: Layout) -> None:
    portals, live, busy = layout
    counts = _busy_counts(place(portals, live, busy), live, busy)
    assert max(counts.values()) - min(counts.values()) <= 1


@given(layouts())
def test_quiet_portals_avoid_busy_processes(layout: Layout) -> None:
    portals, live, busy = layout
    placed = place(portals, live, busy)
    counts = _busy_counts(placed, live, busy)
    quiet_on = {placed[p] for p in portals if p not in busy}
    if len(busy) < len(live):
        assert all(counts[w] == 0 for w in quiet_on)  # never beside a busy portal
    assert all(counts[w] == min(counts.values()) for w in quiet_on)  # else on the least busy


@given(layouts(), st.from_regex(r"x[0-9]{1,3}", fullmatch=True))
def test_a_join_moves_little(layout: Layout, new: str) -> None:
    """Without busy portals a portal stays or moves to the newcomer (rendezvous). With them, a quiet portal
    stays unless its process now holds a busy portal, or moves to a process that newly holds none."""
    portals, live, busy = layout
    before, after = place(portals, live, busy), place(portals, [*live, new], busy)
    free_before = _free(before, live, busy)
    free_after = _free(after, [*live, new], busy)
    for p in portals:
        if p in busy or before[p] == after[p]:
            continue
        assert not busy or before[p] not in free_after or after[p] in free_after - free_before, p
        assert busy or after[p] == new


@given(layouts())
def test_a_leave_moves_only_what_it_must(layout: Layout) -> None:
    portals, live, busy = layout
    if len(live) < 2:
        return
    gone, rest = live[0], live[1:]
    before, after = place(portals, live, busy), place(portals, rest, busy)
    free_before, free_after = _free(before, live, busy), _free(after, rest, busy)
    for p in portals:
        if p in busy or before[p] == after[p]:
            continue
        assert before[p] == gone or before[p] not in free_after or after[p] in free_after - free_before, p


def _free(placed: dict[str, str], live: list[str], busy: list[str]) -> set[str]:
    counts = _busy_counts(placed, live, busy)
    return {w for w in live if counts[w] == min(counts.values())}


def test_backlog_needs_full_claims_for_a_while_then_quiet_after_a_pause() -> None:
    b = Backlog(busy_after_s=10, quiet_after_s=30)
    b.claimed(True, 0)
    b.claimed(True, 9)
    assert not b.is_busy(9)
    b.claimed(False, 9.5)  # a short claim: the backlog was gone, the streak starts again
    b.claimed(True, 10)
    b.claimed(True, 19)
    assert not b.is_busy(19)
    b.claimed(True, 20)
    assert b.is_busy(20)
    b.claimed(False, 21)  # the last, short batch of the backlog: still busy (no flapping)
    assert b.is_busy(49)
    assert not b.is_busy(50)  # 30 s without a full claim
    b.claimed(True, 51)
    assert not b.is_busy(51)  # one full claim again is not a backlog yet


def test_a_seeded_backlog_stays_busy_while_claims_come_back_full() -> None:
    b = Backlog(busy_after_s=10, quiet_after_s=30)
    b.seed(100)
    assert b.is_busy(129)
    b.claimed(True, 129)
    assert b.is_busy(158)
    assert not b.is_busy(159)


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 5)), max_size=60))
def test_backlog_flips_at_most_once_per_hysteresis_window(claims: list[tuple[bool, float]]) -> None:
    """Busy needs ``busy_after_s`` of full claims; quiet needs ``quiet_after_s`` without one: between two
    changes of state at least the shorter of the two passes."""
    b = Backlog(busy_after_s=3, quiet_after_s=7)
    now, state, changed_at = 0.0, False, -100.0
    for full, step in claims:
        now += step
        b.claimed(full, now)
        if b.is_busy(now) != state:
            assert now - changed_at >= 3 or changed_at < 0
            state, changed_at = not state, now
