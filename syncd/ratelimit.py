"""The request controller: one per API key, one lane per endpoint.

CoreClaw documents no quota, nor whether it is per key or per endpoint, and
the API is far away (round trips of 100-300 ms), so syncd finds both the
rate and the number of requests in flight that the server grants, the way
TCP finds a path's window:

* **slow start**: until an endpoint's first rate limit, each answer to a
  request that waited for the controller adds `(growth - 1) x rate / max(1,
  rate x rtt)`: a round trip's worth of answers multiplies the rate by
  `slow_start_growth` (1.5), whatever the latency -- but once the requests in
  flight upstream (rate x lowest round trip) reach four, no faster than x1.3 a
  second: upstream's hidden burst lasts seconds, and when it runs out every
  request in flight is refused.  Above the quota this costs nothing (the
  burst is what gets through, however fast it is spent).
  Growth holds while the smoothed round trip is above `latency_tolerance`
  times the lowest one seen (upstream is queueing, more would not help).
* **in flight**: each lane's window follows its rate: `window_headroom x rate
  x smoothed rtt + 1` requests (Little's law with room to spare), between 1 and
  `max_concurrency`.  On a far API the window, not the rate, is what a fixed
  concurrency would cap.
* **decrease**: a rate limit drops the lane's rate to `decrease_factor` times
  the rate upstream actually *accepted* since its previous one, which becomes
  the known limit.  The first one has no steady rate to measure (a burst was
  being spent): the quota is read off it as a token bucket's with a second's
  burst (`bucketfit.py`), or, with too little to go on, the rate is halved.
* **increase**: per second of sending, a quarter of the known limit up to it
  (at least `increase_per_s`), then a
  probe above it that starts slow and doubles its gain every
  `probe_doubling_s` it holds, so capacity freed upstream (the other endpoint
  idle under a shared quota) is found in seconds, not minutes.  When the other
  endpoint goes quiet (its backfill done), a lane may also climb at recovery
  speed to its limit plus the quiet one's own rate, and gives that back when
  the quiet one sends again: under a shared quota that is the room just
  freed; under separate ones it costs a rate limit, so a lender whose loan
  ended in one is not asked again, and once the quotas are known to be per
  endpoint nothing is borrowed.
* **sharing**: once the answers show one budget for the key, the lanes that
  found a limit split what they found evenly, so neither backfill trails the
  other (each cut from what it alone got through, and the faster one kept most)
  -- at the key's first rate limit, the quota fitted over both lanes' accepted
  requests, which their own fits overestimate; and the busy lanes probe above
  it together, each a share, not each a whole probe.

Each endpoint has its own lane (rate, window, measurements), so one
endpoint's rate limit does not cut the other's rate when the quotas are
separate.  Waits are gates:

* a wait syncd chose itself (a rate limit without `Retry-After`) closes only
  the lane that was limited;
* a wait upstream *announced* (`Retry-After`) closes every lane until it is
  over, unless the quotas are known to be per endpoint: nothing says the
  quota is not the key's, and a request sent early would break the server's
  explicit word.  Whether they are is learnt without such a request, from the
  answers already under way when an endpoint's budget runs out
  (`quotascope.py`); then an announced wait holds only its own endpoint.

Answers arriving while a lane's gate is closed belong to requests sent before
it closed: they extend the gate but do not cut the rate again.  While a lane's
own gate is closed, upstream's bucket refills (up to its burst, which
`GATE_CREDIT_S` guesses at a second's worth): when the gate opens, the lane
may send that much (at the rate the cut left) sooner than its pace, within its
window and the ceiling.  A gate is otherwise a second of the quota lost, and
the measure of the accepted rate already counts that second.  If a request
sent so is refused, the burst is smaller than that, and no gate earns credit
again.  The rate
never leaves [`min_rate_per_s`, `max_rate_per_s`]; `max_rate_per_s` (None by
default: no ceiling) also caps both lanes together.

The maths (`RateState`, `accepted_rate_per_s`, `next_send_at`, `window_for`)
is pure, in `ratemath.py`, and tested with tables; here are the lanes and
`RateLimiter`, the thin async shell, with time injected.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from syncd.bucketfit import fitted_rate_per_s
from syncd.clock import SYSTEM_CLOCK, Clock
from syncd.quotascope import QuotaScope, ScopeLearner
from syncd.ratemath import (
    RatePolicy,
    RateState,
    accepted_rate_per_s,
    next_send_at,
    window_for,
)

Sleep = Callable[[float], Awaitable[None]]

Monotonic = Callable[[], float]

# While syncd waits out a rate limit, upstream's bucket refills, but only up to
# its burst; a second's worth is the usual size.  So at most this much of a
# wait counts in the accepted rate's window: a 3 s Retry-After would otherwise
# read as a limit a third too low.
GATE_CREDIT_S = 1.0
FIRST_CUT_LOOKBACK_S = 1.0  # the first cut measures what got through this far back, at least
CLIMB_RATIO = 1.25  # a lane climbing into its first rate limit: its last second this much faster
IDLE_AFTER_S = 1.0  # a lane that sent nothing for this long is between cycles
# A request waiting on a gate looks again this often: the answers under way may show
# meanwhile that the quotas are per endpoint, which opens an announced wait's gate for
# the other endpoint (every 50 ms of such a wait is a round of its requests lost).
GATE_RECHECK_S = 0.05
QUEUE_SLACK_S = 0.05  # round trips this far above the lowest are not queueing yet
SRTT_GAIN = 0.125  # TCP's smoothing of the round-trip time
MIN_RTT_WINDOW_S = 30.0  # the lowest round trip is looked for this far back
ANSWER_TURNS = 3  # event-loop turns a request yields, before it goes, to answers under way


@dataclass(slots=True)
class Ticket:
    """One request's passage: which lane, when it went, whether it waited for the controller."""

    lane: Lane
    sent_at: float
    paced: bool
    answered_at: float | None = None
    on_credit: bool = False  # went sooner than the lane's pace, on a closed gate's refill

    @property
    def rtt_s(self) -> float | None:
        return None if self.answered_at is None else self.answered_at - self.sent_at


class _MinWindow:
    """The lowest value seen in the last `span_s` seconds (a monotonic deque)."""

    def __init__(self, span_s: float) -> None:
        self._span_s = span_s
        self._items: deque[tuple[float, float]] = deque()

    def add(self, now: float, value: float) -> None:
        while self._items and self._items[-1][1] >= value:
            self._items.pop()
        self._items.append((now, value))
        while self._items[0][0] < now - self._span_s:
            self._items.popleft()

    @property
    def value(self) -> float | None:
        return self._items[0][1] if self._items else None


@dataclass(eq=False)
class Lane:
    """One endpoint's share of the controller: its rate, window and measurements."""

    name: str
    policy: RatePolicy
    state: RateState = field(init=False)
    in_flight: int = 0
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    not_before: float = float("-inf")
    last_sent_at: float | None = None
    srtt_s: float | None = None
    _min_rtt: _MinWindow = field(default_factory=lambda: _MinWindow(MIN_RTT_WINDOW_S))
    _successes: deque[float] = field(default_factory=deque)
    _last_success_at: float | None = None
    _last_cut_at: float | None = None
    _measure_from: float | None = None
    cuts: int = 0
    # Lanes gone quiet whose own rate this lane's limit took over (name: rate), and
    # lanes whose loan ended in a rate limit while they stayed quiet: their quota is
    # evidently not this lane's, so they are not asked again.
    borrowed: dict[str, float] = field(default_factory=dict)
    no_loans: frozenset[str] = frozenset()
    # Upstream's bucket refills while this lane's gate is closed, up to its burst: so
    # much of a gate (seconds) the lane may make up for once it opens, by sending
    # `credit` requests sooner than its pace.  0 once such a request was refused (the
    # burst is smaller than that): a gate is then simply lost time, as before.
    refill_s: float = GATE_CREDIT_S
    credit: float = 0.0
    credit_until: float = float("-inf")  # credit is spent by then, or void: others may
    _gate_from: float | None = None  # when the gate not yet turned into credit closed

    def __post_init__(self) -> None:
        self.state = RateState.initial(self.policy)

    @property
    def rate_per_s(self) -> float:
        return self.state.rate_per_s

    @property
    def limit_per_s(self) -> float | None:
        return self.state.limit_per_s

    @property
    def min_rtt_s(self) -> float | None:
        return self._min_rtt.value

    @property
    def window(self) -> int:
        # The smoothed round trip, not the lowest: it is what a request really takes,
        # and growth already stops while it is far above the lowest.
        return window_for(self.policy, self.state.rate_per_s, self.srtt_s)

    def latency_holds(self) -> bool:
        """No sign of upstream queueing: the smoothed round trip is near the lowest one.

        Near means within `latency_tolerance` times it, or `QUEUE_SLACK_S` above it:
        on a near server a few milliseconds of this process's own busy event loop
        would otherwise read as queueing upstream.
        """
        low = self.min_rtt_s
        if low is None or self.srtt_s is None:
            return True
        return self.srtt_s <= max(self.policy.latency_tolerance * low, low + QUEUE_SLACK_S)

    def observe_rtt(self, now: float, rtt_s: float | None) -> None:
        if rtt_s is None:
            return
        self._min_rtt.add(now, rtt_s)
        prev = self.srtt_s
        self.srtt_s = rtt_s if prev is None else prev + SRTT_GAIN * (rtt_s - prev)

    def on_success(self, now: float, ticket: Ticket, *, probe_share: float = 1.0) -> None:
        self.observe_rtt(now, ticket.rtt_s)
        sending_s = 0.0
        if ticket.paced and self._last_success_at is not None:
            sending_s = now - self._last_success_at
        self._last_success_at = now
        if self.policy.window_s > 0:
            self._successes.append(now)
            while self._successes[0] <= now - self.policy.window_s:
                self._successes.popleft()
        if ticket.paced and self.latency_holds():
            rtt_s = self.srtt_s if self.srtt_s is not None else 0.0
            self.state = self.state.after_success(
                self.policy,
                sending_s=sending_s,
                rtt_s=rtt_s,
                base_rtt_s=self.min_rtt_s,
                probe_share=probe_share,
            )

    def on_rate_limited(self, now: float, wait_s: float, rtt_s: float | None) -> bool:
        """Cut (unless the gate is closed already) and close the gate; True when it cut."""
        self.observe_rtt(now, rtt_s)
        cut = now >= self.not_before  # not an answer to a request sent before the gate closed
        if cut:
            self.state = self.state.after_rate_limited(
                self.policy, self._accepted_per_s(now), self._fitted_per_s(now)
            )
            self._last_cut_at = self._gate_from = now
            self.cuts += 1
            self.credit, self.credit_until = 0.0, float("-inf")
            self.borrowed = {}  # the cut measured what this lane really gets
        self.close_until(now + wait_s)
        return cut

    def open_gate(self, now: float) -> None:
        """The lane's own gate is open: what upstream refilled meanwhile (at the rate the
        cut left, for at most `refill_s` of it) becomes credit."""
        if self._gate_from is None or now < self.not_before:
            return
        closed_s = min(self.not_before - self._gate_from, self.refill_s)
        self.credit = closed_s * self.state.rate_per_s
        # What refilled is there to be spent while the gate's second lasts, not later:
        # by then the key's other users (the other lane, another process) may have.
        self.credit_until = self.not_before + self.refill_s
        self._gate_from = None

    def has_credit(self, now: float) -> bool:
        return self.credit >= 1 and now < self.credit_until

    def spend_credit(self, now: float) -> bool:
        """Whether a request going at `now` goes on credit (sooner than the pace allows)."""
        spaced = self.last_sent_at is not None and now < self.last_sent_at + 1 / self.rate_per_s
        if not (spaced and self.has_credit(now)):
            return False
        self.credit -= 1
        return True

    def credit_refused(self) -> None:
        """A request sent on credit was refused: upstream's burst is smaller than the
        credit assumed, so gates earn none from now on."""
        self.refill_s = self.credit = 0.0

    def idle(self, now: float) -> bool:
        """Nothing sent for a while, nothing waiting: this endpoint's stream is between cycles."""
        recent = self.last_sent_at is not None and now - self.last_sent_at < IDLE_AFTER_S
        return not (self.in_flight or self.turn.locked() or recent)

    def allow_up_to(self, limit_per_s: float) -> None:
        """Raise the known limit (never lower it) so the rate may climb there at recovery speed."""
        known = self.state.limit_per_s
        if known is not None and limit_per_s > known:
            self.state = replace(self.state, limit_per_s=limit_per_s, probe_s=0.0)

    @property
    def own_limit_per_s(self) -> float | None:
        """The known limit without what this lane borrowed."""
        known = self.state.limit_per_s
        if known is None:
            return None
        return max(self.policy.min_rate_per_s, known - sum(self.borrowed.values()))

    @property
    def own_rate_per_s(self) -> float:
        """The rate this lane has of its own: what it lends when it goes quiet."""
        return max(self.policy.min_rate_per_s, self.state.rate_per_s - sum(self.borrowed.values()))

    def borrow(self, quiet: dict[str, float]) -> None:
        """Take over the own rates of lanes gone quiet (name: rate), each once until it sends
        again or this lane is cut: the limit becomes this lane's plus theirs, not its *rate*
        plus theirs, or every answer would raise it again without bound."""
        fresh = {
            name: rate
            for name, rate in quiet.items()
            if name not in self.borrowed and name not in self.no_loans
        }
        known = self.state.limit_per_s
        if fresh and known is not None:
            self.allow_up_to(known + sum(fresh.values()))
            self.borrowed.update(fresh)

    def give_back(self, busy: Iterable[str]) -> None:
        """Lanes that lent their rate send again: their share of the limit goes back to them."""
        returned = sum(self.borrowed.pop(name) for name in busy if name in self.borrowed)
        known = self.state.limit_per_s
        if returned and known is not None:
            limit = max(self.policy.min_rate_per_s, known - returned)
            self.state = replace(
                self.state, rate_per_s=min(self.state.rate_per_s, limit), limit_per_s=limit
            )

    def share(self, rate_per_s: float, limit_per_s: float) -> None:
        """Set this lane to its share of a budget the key's lanes turned out to have in common."""
        self.state = RateState(rate_per_s=rate_per_s, limit_per_s=limit_per_s)

    def leave_slow_start_at(self, rate_per_s: float, limit_per_s: float | None = None) -> None:
        """Another lane of the key found its limit and settled at `rate_per_s` below it:
        growing past that blind would likely overshoot this one's too (a shared quota, or
        quotas per endpoint and alike), so this lane takes the same rate and limit -- it
        recovers to that limit and probes slowly above it instead of doubling."""
        if self.state.limit_per_s is None and self.state.rate_per_s >= rate_per_s:
            limit = rate_per_s if limit_per_s is None else max(limit_per_s, rate_per_s)
            self.state = RateState(rate_per_s=rate_per_s, limit_per_s=limit)

    def close_until(self, until: float) -> None:
        self.not_before = max(self.not_before, until)
        if self._last_cut_at is not None:
            self._measure_from = max(self._last_cut_at, self.not_before - GATE_CREDIT_S)

    @property
    def first_cut_at(self) -> float | None:
        """When the lane's only rate limit so far came (None: none, or more than one)."""
        return self._last_cut_at if self.cuts == 1 else None

    def accepted_until(self, at: float) -> list[float]:
        """When the accepted requests of the last `window_s` were answered, up to `at`."""
        return [t for t in self._successes if t <= at]

    def _fitted_per_s(self, now: float) -> float | None:
        """At the first rate limit: the quota of a token bucket with a second's burst --
        if the lane was climbing into it.  One that was not (its last second no faster
        than the seconds before) met a quota that shrank, or a bucket others drained,
        which the fit would read as about the rate it sent at: it halves instead."""
        if self.state.limit_per_s is not None or self.policy.window_s <= 0 or not self._successes:
            return None
        recent_since = now - FIRST_CUT_LOOKBACK_S
        recent = sum(1 for t in self._successes if t > recent_since)
        earlier_s = recent_since - self._successes[0]
        earlier = len(self._successes) - recent
        if earlier_s > 0 and recent / FIRST_CUT_LOOKBACK_S < CLIMB_RATIO * earlier / earlier_s:
            return None
        return fitted_rate_per_s(
            self._successes, now, burst_s=GATE_CREDIT_S, upper_per_s=self.state.rate_per_s
        )

    def _accepted_per_s(self, now: float) -> float | None:
        if self.policy.window_s <= 0:
            return None
        if self._measure_from is None:
            # The first rate limit: what got through in the last few round trips (at
            # least a second) -- an overestimate while upstream's burst lasted, still
            # far nearer than a slow start's nominal rate.
            span_s = max(FIRST_CUT_LOOKBACK_S, 4 * (self.srtt_s or 0.0))
            return accepted_rate_per_s(self._successes, since=now - span_s, now=now)
        since = max(self._measure_from, now - self.policy.window_s)
        return accepted_rate_per_s(self._successes, since=since, now=now)


class RateLimiter:
    """The async gate every CoreClaw request passes through.

    Build one per API key and hand it to every client using that key (the
    client builds its own when given none): announced waits and the optional
    ceiling hold for every endpoint of the key.
    """

    def __init__(
        self,
        policy: RatePolicy | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.policy = policy or RatePolicy()
        self._monotonic = clock.monotonic
        self._sleep = clock.sleep
        self._lanes: dict[str, Lane] = {}
        self._not_before = float("-inf")  # announced waits: every lane, unless per endpoint
        self._scope = ScopeLearner()
        self._last_sent_at: float | None = None  # for the key-wide ceiling
        self._changed = asyncio.Event()  # a slot freed: waiters for the window look again
        self._ceiling_turn = asyncio.Lock()  # FIFO: whose turn it is at the key's ceiling

    def lane(self, name: str = "") -> Lane:
        """The lane of one endpoint (created on first use)."""
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = Lane(name, self.policy)
        return lane

    @property
    def scope(self) -> QuotaScope:
        """What one rate-limit budget covers, as far as the answers have shown by now.
        (Inside, `self._scope.scope`: the controller settles it where it looks.)"""
        self._settle_scope(self._monotonic())
        return self._scope.scope

    @property
    def not_before(self) -> float:
        """Monotonic time before which no request to any endpoint may be sent
        (none, once the quotas are known to be per endpoint)."""
        return float("-inf") if self._scope.scope is QuotaScope.ENDPOINT else self._not_before

    @asynccontextmanager
    async def slot(self, endpoint: str = "") -> AsyncIterator[Ticket]:
        """Hold one place in the endpoint's window, entered only when rate and gates allow."""
        lane = self.lane(endpoint)
        ticket = await self._wait_turn(lane)
        try:
            yield ticket
        finally:
            ticket.answered_at = self._monotonic()
            lane.in_flight -= 1
            self._changed.set()

    async def _wait_turn(self, lane: Lane) -> Ticket:
        # First come, first served within a lane (asyncio.Lock is FIFO): a full scan
        # asks for its pages in order and stores them in order, so a page overtaken
        # at the gate would hold up every page behind it.
        queued = lane.turn.locked()
        async with lane.turn:
            ticket = await self._wait_for_window_and_rate(lane)
        ticket.paced = ticket.paced or queued
        return ticket

    async def _wait_for_window_and_rate(self, lane: Lane) -> Ticket:
        # Look again after every wait: a rate limit seen by another request
        # meanwhile may have closed a gate.
        paced = False
        landed = False  # answers already received were read since the last wait
        while True:
            if lane.in_flight >= lane.window:
                paced = True
                landed = False
                self._changed.clear()
                await self._changed.wait()
                continue
            now = self._monotonic()
            send_at = self._send_at(lane, now, ceiling=False)
            if send_at <= now:
                if not landed and self._answers_due():
                    # An answer already on this machine may say "rate limited": let it be
                    # read first, or this request goes out after the wait it announces began.
                    await self._let_answers_land()
                    landed = True
                    continue
                if self.policy.max_rate_per_s is None:
                    return self._take(lane, now, paced)
                # The ceiling is the key's: endpoints take turns at it, first come
                # first served, so neither starves the other.
                async with self._ceiling_turn:
                    return await self._wait_for_ceiling(lane, paced)
            paced = paced or send_at > max(lane.not_before, self.not_before)
            await self._nap(send_at - now)
            landed = False

    async def _wait_for_ceiling(self, lane: Lane, paced: bool) -> Ticket:
        while (send_at := self._send_at(lane, now := self._monotonic())) > now:
            paced = True
            await self._nap(send_at - now)
        return self._take(lane, now, paced)

    async def hold(self, ticket: Ticket, *, land_answers: bool = True) -> None:
        """The last moment before `ticket`'s request is written (its connection in hand):
        wait out a gate that closed after the slot was granted -- the connection took a
        few turns of the event loop, and a rate limit was read meanwhile.  The request
        is dated from when it really goes.  `land_answers`: first let answers received
        since the slot be read (pointless when no turn of the loop has passed)."""
        lane = ticket.lane
        if land_answers and self._answers_due(besides=1):
            await self._let_answers_land()
        if max(lane.not_before, self.not_before) <= self._monotonic():
            return
        # Held: once the gate opens, go at the lane's pace (and the key's ceiling), not
        # all at once with every other request held meanwhile.
        # Never on credit: they were let in under the window before the cut.
        while (send_at := self._send_at(lane, now := self._monotonic(), credit=False)) > now:
            await self._nap(send_at - now)
        ticket.on_credit = False
        ticket.sent_at = lane.last_sent_at = self._last_sent_at = now

    def _answers_due(self, besides: int = 0) -> bool:
        """Requests other than `besides` of the caller's own are in flight."""
        return sum(lane.in_flight for lane in self._lanes.values()) > besides

    @staticmethod
    async def _let_answers_land() -> None:
        # A few turns of the event loop: one to read the socket, one to wake the task
        # the answer belongs to, one for it to decode the answer and close the gate.
        for _ in range(ANSWER_TURNS):
            await asyncio.sleep(0)

    async def _nap(self, wait_s: float) -> None:
        # In steps: what the answers under way show about the quota's scope may
        # open the gate early for this endpoint.
        await self._sleep(min(wait_s, GATE_RECHECK_S))

    def _take(self, lane: Lane, now: float, paced: bool) -> Ticket:
        lane.in_flight += 1
        on_credit = lane.spend_credit(now)
        lane.last_sent_at = self._last_sent_at = now
        return Ticket(lane, now, paced, on_credit=on_credit)

    def _send_at(
        self, lane: Lane, now: float, *, ceiling: bool = True, credit: bool = True
    ) -> float:
        self._settle_scope(now)
        gate = max(lane.not_before, self.not_before)
        lane.open_gate(now)
        send_at = next_send_at(
            now=now,
            # On credit, a request need not be spaced from the one before.
            last_sent_at=None if credit and lane.has_credit(now) else lane.last_sent_at,
            rate_per_s=lane.rate_per_s,
            not_before=gate,
        )
        if ceiling and self.policy.max_rate_per_s is not None:
            key_send_at = next_send_at(
                now=now,
                last_sent_at=self._last_sent_at,
                rate_per_s=self.policy.max_rate_per_s,
                not_before=gate,
            )
            send_at = max(send_at, key_send_at)
        return send_at

    def record_success(self, ticket: Ticket) -> None:
        """An accepted request: measure it, and grow the lane if it waited for the controller."""
        lane, now = ticket.lane, self._monotonic()
        others = [o for o in self._lanes.values() if o is not lane]
        lane.on_success(now, ticket, probe_share=self._probe_share(others, now))
        self._on_answer(lane, ticket, refused=False, now=now)
        if lane.limit_per_s is None:
            settled = [o for o in others if o.limit_per_s is not None]
            if settled:
                first = max(settled, key=lambda o: o.rate_per_s)
                own_limit = first.own_limit_per_s or first.rate_per_s
                lane.leave_slow_start_at(min(first.rate_per_s, own_limit), own_limit)
        else:
            self._lend_between(lane, others, now)
        self._changed.set()  # the window may have grown

    def _probe_share(self, others: list[Lane], now: float) -> float:
        """Under one budget for the key, the busy lanes probe above it together: each a
        share, or two lanes find the quota's edge twice as fast as one would."""
        if self._scope.scope is not QuotaScope.KEY:
            return 1.0
        return 1.0 / (1 + sum(1 for o in others if not o.idle(now)))

    def _lend_between(self, lane: Lane, others: list[Lane], now: float) -> None:
        """An endpoint gone quiet (its backfill done) may have left room under a shared
        quota: `lane` climbs towards its limit plus the quiet one's own rate, at recovery
        speed, and gives that back when the quiet one sends again.  Under quotas per
        endpoint there is no such room: once that is known nothing is borrowed, and a loan
        that ended in a rate limit while its lender stayed quiet is not asked for again."""
        quiet = [o for o in others if o.idle(now)]
        if self._scope.scope is QuotaScope.ENDPOINT:
            lane.give_back(list(lane.borrowed))
            return
        lane.give_back(o.name for o in others if o not in quiet)
        lane.borrow({o.name: o.own_rate_per_s for o in quiet})

    def _on_answer(self, lane: Lane, ticket: Ticket, *, refused: bool, now: float) -> None:
        before = self._scope.scope
        self._scope.on_answer(lane.name, sent_at=ticket.sent_at, refused=refused, now=now)
        self._on_scope(before)

    def _settle_scope(self, now: float) -> None:
        before = self._scope.scope
        self._scope.settle(now)
        self._on_scope(before)

    def _on_scope(self, before: QuotaScope) -> None:
        """The scope was `before` this answer or this look: lanes just found to share one
        budget split it (the verdict may come with an answer or once a window closes)."""
        if before is not QuotaScope.KEY and self._scope.scope is QuotaScope.KEY:
            self._share_equally()

    def _share_equally(self) -> None:
        """The lanes' budgets are one: split it evenly between the lanes that found a limit.

        Each lane cut from what it alone got through, so the one that happened to be
        faster keeps most of the key's quota, and the other's backfill trails behind it;
        even shares let both finish together, and a lane gone quiet lends its share.
        """
        settled = [lane for lane in self._lanes.values() if lane.limit_per_s is not None]
        if len(settled) < 2:
            return
        rate = sum(lane.rate_per_s for lane in settled) / len(settled)
        limit = sum(lane.limit_per_s or 0.0 for lane in settled) / len(settled)
        together = self._fitted_together(settled, limit * len(settled))
        if together is not None:
            limit = together / len(settled)
            rate = min(rate, limit * self.policy.decrease_factor)
        for lane in settled:
            lane.share(rate, limit)

    def _fitted_together(self, lanes: list[Lane], found_per_s: float) -> float | None:
        """At the key's first rate limit: its quota read off the lanes' accepted requests
        together (bucketfit.py), if below the `found_per_s` their own fits add up to.  Each
        lane's fit reads a bucket of its own, and two such add up to more than the one they
        shared: 14.6 + 11.5 = 26.1/s against 25/s, where one fit over both read 25.1-25.4.
        Kept above half of `found_per_s`, as a lane's own fit is."""
        cuts = [lane.first_cut_at for lane in lanes]
        if None in cuts or self.policy.window_s <= 0:
            return None
        refused_at = min(t for t in cuts if t is not None)
        accepted = sorted(t for lane in lanes for t in lane.accepted_until(refused_at))
        fitted = fitted_rate_per_s(
            accepted, refused_at, burst_s=GATE_CREDIT_S, upper_per_s=found_per_s
        )
        if fitted is None:
            return None
        return max(fitted, self.policy.blind_decrease_factor * found_per_s)

    def record_rate_limited(self, ticket: Ticket, wait_s: float, *, announced: bool) -> float:
        """Slow the ticket's lane and close gates for `wait_s`: every lane's when upstream
        announced the wait, the lane's own otherwise.  Returns the reopening time."""
        lane, now = ticket.lane, self._monotonic()
        if ticket.on_credit:
            lane.credit_refused()
        lenders = [self._lanes[name] for name in lane.borrowed]
        if lane.on_rate_limited(now, wait_s, ticket.rtt_s):
            unknown = self._scope.scope is QuotaScope.UNKNOWN
            if unknown and lenders and all(o.idle(now) for o in lenders):
                lane.no_loans |= {o.name for o in lenders}
            # The other endpoint's answers from the window arrive at its own pace.
            rtt_s = max((o.srtt_s or 0.0 for o in self._lanes.values()), default=0.0)
            self._scope.on_event(lane.name, sent_at=ticket.sent_at, now=now, rtt_s=rtt_s)
        self._on_answer(lane, ticket, refused=True, now=now)
        if announced:
            self._not_before = max(self._not_before, now + wait_s)
        self._changed.set()
        return max(lane.not_before, self.not_before)
