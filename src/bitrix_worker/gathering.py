"""Full requests: a claim takes as many entries as fill one request, and a short claim at the tail of a
backlog waits a moment for the retries about to join it.

*Spill-over.* A claim of ``batch_size`` entries does not always make ``batch_size`` commands: field validation
refuses some with no call (``screening``), a plan may need no call (a deal known deleted), and entries of one
key coalesce. Each such batch would go out short (on the fault mix, 2% invalid data made every other request
carry 48 commands). So each batch notes how many of its entries made no command, the next claims take that
many more (the largest shortfall of the last ``SHORTFALL_WINDOW`` batches, at most ``batch_size /
MAX_EXTRA_FRACTION``), and a batch that ends up with more commands than a request holds keeps the first
``batch_size`` and hands the units beyond back (``Batch.keep``): their entries are still this consumer's,
nothing was sent or written for them, and they lead the next batch (planned and screened again there; a
``warn`` finding of such a unit is counted once per screening). Only their entries move; the batch's "sent"
mark (the poison cap) no longer counts them.

*Tail.* While a backlog lasts every claim is full and the retries put back into the stream travel in those
full batches. When the stream runs short, what is left is mostly retries, and each wave of them falls due a
little after the answer that caused it (a command failing twice, three times). Claiming each as soon as it
appears sends a lone call or a small batch per retry: on the fault mix, 7 requests for the last ~20 commands.

So a claim that comes back short is held (its entries stay this consumer's, pending, kept fresh by the
heartbeat like a batch in flight) and topped up by the next claims while more work is expected at once:
another batch of this process is still in flight (its answer may schedule retries), or a retry this process
scheduled falls due within the linger (it remembers their due times, so the check costs no round trip; a retry
another process scheduled is not waited for). The held entries go as one batch as soon as they fill it, when
nothing more is expected, or after ``tail_linger_s`` (the bound on the latency this adds; 0 turns it off).

*Due, not yet promoted.* A due retry re-enters the stream only when ``promote_due`` moves it, which the
worker's timer does every ``PROMOTE_INTERVAL_S``. A due time was once forgotten as soon as it passed, so a
look in the gap between the two (a retry due, not yet promoted, not claimable) saw nothing more expected and
sent the held entries without it; the retry went alone a moment later (about one tail in four in
``test_retries_at_the_tail_travel_in_one_request``; likely the fault mix's occasional 229th request). So a due
time is forgotten only by ``fell_due``, which the worker asks right before each claim and, when a remembered
retry has fallen due since, promotes first: the claim that follows sees every retry whose time has passed
(Redis' due time is never later than the one remembered here: it was taken before the settlement returned).
A retry that falls due between that claim and the decision is still remembered, so still expected, and the
next claim promotes and takes it. While holding, the loop also looks again when the next retry falls due.

Held or handed back, entries stay claimed and their keys' turns this consumer's; a batch of several
claims takes its own fencing token when it starts (``OperationQueue.claimed_token``). No I/O here.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .values import Entry

POLL_S = 0.1  # while holding, look again this often (an answer in flight may schedule a retry meanwhile)
SHORTFALL_WINDOW = 8  # batches whose shortfall sets how many more entries a claim takes
MAX_EXTRA_FRACTION = 5  # a claim takes at most batch_size / this more entries than a request holds
RETRIES_REMEMBERED = 1000  # due times of this process's scheduled retries kept (the soonest, when more)


@dataclass(slots=True)
class Gathering:
    batch_size: int
    linger_s: float
    held: list[Entry] = field(default_factory=list)
    since: float = 0.0  # when the oldest held entry was claimed
    shortfalls: deque[int] = field(default_factory=lambda: deque(maxlen=SHORTFALL_WINDOW))
    retries_due: list[float] = field(default_factory=list)  # a heap: the soonest first

    def scheduled(self, due_at: float) -> None:
        """A retry this process scheduled falls due at ``due_at``."""
        heapq.heappush(self.retries_due, due_at)
        if len(self.retries_due) > RETRIES_REMEMBERED:  # the latest are minutes away, not the tail's
            self.retries_due = heapq.nsmallest(RETRIES_REMEMBERED // 2, self.retries_due)

    def fell_due(self, now: float) -> bool:
        """Whether a retry this process scheduled fell due since the last call (asked right before each
        claim; True: promote the due retries first, so that the claim takes them). Those are forgotten."""
        due = False
        while self.retries_due and self.retries_due[0] <= now:
            heapq.heappop(self.retries_due)
            due = True
        return due

    def retry_due_within(self, now: float) -> bool:
        """Whether a retry this process scheduled falls due within the linger, or fell due after the last
        claim's promotion (the next claim promotes it)."""
        return bool(self.retries_due) and self.retries_due[0] <= now + self.linger_s

    @property
    def want(self) -> int:
        """Entries per batch: a request's worth, plus the recent shortfall of commands per entry."""
        extra = min(max(self.shortfalls, default=0), self.batch_size // MAX_EXTRA_FRACTION)
        return self.batch_size + extra

    def room(self) -> int:
        """How many entries the next claim may add."""
        return max(1, self.want - len(self.held))

    def full(self, entries: list[Entry]) -> bool:
        """A claim that needs no gathering: nothing held and the claim filled a batch (the common case)."""
        return not self.held and len(entries) >= self.want

    def add(self, entries: list[Entry], now: float) -> None:
        if entries and not self.held:
            self.since = now
        self.held.extend(entries)

    def carry(self, entries: list[Entry], now: float) -> None:
        """Entries a batch handed back (``Batch.keep``): they lead the next batch."""
        if entries and not self.held:
            self.since = now
        self.held[:0] = entries

    def ready(self, now: float, *, expecting: bool) -> bool:
        """Whether the held entries go now: full, nothing more expected soon, or waited long enough."""
        if not self.held:
            return False
        if len(self.held) >= self.want or not expecting:
            return True
        return now - self.since >= self.linger_s

    def take(self) -> list[Entry]:
        taken, self.held = self.held, []
        return taken

    def wait_s(self, now: float) -> float:
        """How long to wait for new entries before looking again: at most until the next retry falls due."""
        due = self.retries_due[0] - now if self.retries_due else POLL_S
        return max(0.01, min(POLL_S, due, self.since + self.linger_s - now))


@dataclass(slots=True)
class Batch:
    """One batch's link back to the gathering, for ``Delivery.deliver``."""

    gathering: Gathering
    entries: list[Entry]  # the batch's own list: carried entries leave it (InFlight forgets only the rest)
    ids: list[str]  # marked sent when its first request leaves: carried entries are not
    now: float = 0.0

    def keep(self, planned: Sequence[tuple[bool, Sequence[str]]]) -> int:
        """How many of the batch's planned units go in its request; ``planned``: (sends a command in it, its
        stream ids) per unit, in order. The units beyond a full request are handed back to the gathering."""
        g = self.gathering
        sends = [s for s, _ in planned]
        commands = sum(sends)
        g.shortfalls.append(max(0, len(self.entries) - commands))
        if commands <= g.batch_size:
            return len(sends)
        n, counted = 0, 0
        while counted < g.batch_size:
            counted += sends[n]
            n += 1
        out = {i for _, ids in planned[n:] for i in ids}
        g.carry([e for e in self.entries if e.id in out], self.now)
        self.entries[:] = [e for e in self.entries if e.id not in out]
        self.ids[:] = [i for i in self.ids if i not in out]
        return n
