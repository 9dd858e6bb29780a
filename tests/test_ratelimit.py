"""The request controller: its lanes on a fake clock (the maths: test_ratemath.py)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from typing import Any

import pytest

from syncd.bucketfit import fitted_rate_per_s
from syncd.quotascope import QuotaScope
from syncd.ratelimit import Lane, RateLimiter, Ticket
from syncd.ratemath import RatePolicy, RateState
from tests.clock import FakeClock
from tests.test_ratemath import POLICY


def limiter_on(clock: FakeClock, policy: RatePolicy = POLICY) -> RateLimiter:
    return RateLimiter(policy, clock=clock.clock())


# -- the async controller on a fake clock ------------------------------------------


async def send(
    limiter: RateLimiter, clock: FakeClock, lane: str = "", rtt_s: float = 0.0
) -> Ticket:
    """One request through a lane, answered `rtt_s` later with a success."""
    async with limiter.slot(lane) as ticket:
        clock.now += rtt_s
    limiter.record_success(ticket)
    return ticket


async def test_requests_are_spaced_by_the_rate() -> None:
    """At 2 requests/s, three requests in a row go out at t=0, 0.5, 1.0 (and speed it up)."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None))
    sent = [(await send(limiter, clock)).sent_at for _ in range(3)]
    assert sent[:2] == pytest.approx([0.0, 0.5])
    assert 0.5 < sent[2] <= 1.0  # the second answer, which waited, raised the rate


async def test_announced_gate_holds_every_endpoint_until_the_wait_is_over() -> None:
    """Retry-After: 30 on one endpoint: nothing to either endpoint before t=30."""
    clock = FakeClock()
    limiter = limiter_on(clock)
    ticket = await send(limiter, clock, "v2")
    assert limiter.record_rate_limited(ticket, 30.0, announced=True) == 30.0
    assert limiter.lane("v2").rate_per_s == 1.0  # the first cut halves ...
    assert limiter.lane("v1").rate_per_s == 2.0  # ... only the limited endpoint's rate
    sent: list[float] = []

    async def request(lane: str) -> None:
        sent.append((await send(limiter, clock, lane)).sent_at)

    await asyncio.gather(request("v1"), request("v2"), request("v2"))
    assert len(sent) == 3 and min(sent) >= 30.0


async def test_a_rate_limit_being_read_holds_a_request_about_to_go() -> None:
    """A request whose turn comes while an answer carrying Retry-After is being read (a few
    event-loop turns behind) waits for the gate that answer closes; it is not sent first."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=100.0))
    sent: list[float] = []

    async def limited_answer() -> None:
        async with limiter.slot("v1") as ticket:
            await asyncio.sleep(0)  # the answer arrives ...
            await asyncio.sleep(0)  # ... and is decoded a turn later
        limiter.record_rate_limited(ticket, 2.0, announced=True)

    async def next_request() -> None:
        await asyncio.sleep(0)  # its turn comes while the answer above is in the socket
        sent.append((await send(limiter, clock, "v2")).sent_at)

    await asyncio.gather(limited_answer(), next_request())
    assert sent == [pytest.approx(2.0)]


async def test_a_wait_syncd_chose_holds_only_its_endpoint() -> None:
    """A rate limit without Retry-After closes the limited lane's gate, not the other's."""
    clock = FakeClock()
    limiter = limiter_on(clock)
    ticket = await send(limiter, clock, "v2")
    limiter.record_rate_limited(ticket, 5.0, announced=False)
    v1 = await send(limiter, clock, "v1")
    assert v1.sent_at < 5.0
    v2 = await send(limiter, clock, "v2")
    assert v2.sent_at >= 5.0


async def test_gate_only_moves_forward() -> None:
    """A shorter wait reported later does not reopen a gate closed for longer."""
    clock = FakeClock()
    limiter = limiter_on(clock)
    ticket = await send(limiter, clock)
    limiter.record_rate_limited(ticket, 60.0, announced=True)
    limiter.record_rate_limited(ticket, 1.0, announced=True)
    assert limiter.not_before == 60.0 and limiter.lane().not_before == 60.0


async def test_answers_while_the_gate_is_closed_cut_once() -> None:
    """A second 429 from a request sent before the gate closed extends it, no second cut."""
    clock = FakeClock()
    limiter = limiter_on(clock)
    ticket = await send(limiter, clock)
    limiter.record_rate_limited(ticket, 2.0, announced=False)
    clock.now = 0.1
    assert limiter.record_rate_limited(ticket, 5.0, announced=False) == pytest.approx(5.1)
    assert limiter.lane().rate_per_s == 1.0


async def test_cut_from_what_upstream_accepted() -> None:
    """A later 429 cuts to 0.9 x accepted rate since the previous one (wait counted <= 1 s)."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, initial_rate_per_s=16.0))
    lane = limiter.lane()
    ticket = await send(limiter, clock)
    limiter.record_rate_limited(ticket, 3.0, announced=False)  # first: 16 -> 8, gate until 3
    assert (lane.rate_per_s, lane.limit_per_s) == (8.0, 8.0)
    for t in (3.0, 3.5, 4.0, 4.5, 5.0, 5.5):  # 6 accepted, not paced: no increase
        clock.now = t
        limiter.record_success(Ticket(lane, t, paced=False))
    clock.now = 6.0
    limiter.record_rate_limited(ticket, 0.5, announced=False)
    # measured from t=2 (1 s before the gate reopened), not t=0: 6 / 4 s
    assert lane.limit_per_s == pytest.approx(1.5)
    assert lane.rate_per_s == pytest.approx(1.35)


async def test_requests_that_wait_raise_the_rate_idle_ones_do_not() -> None:
    """The rate grows only with answers to requests that waited for the controller."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None))
    lane = limiter.lane()
    await send(limiter, clock)  # went at once: earns nothing
    assert lane.rate_per_s == 2.0
    await send(limiter, clock)  # waited 0.5 s for the rate: slow start raises it by half
    assert lane.rate_per_s == pytest.approx(3.0)
    clock.now += 60.0  # idle: the next request does not wait
    await send(limiter, clock)
    assert lane.rate_per_s == pytest.approx(3.0)


async def test_growth_holds_while_latency_inflates() -> None:
    """Round trips far above the lowest one seen (upstream queueing) stop the rate growing."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, max_concurrency=64))
    lane = limiter.lane()
    await send(limiter, clock, rtt_s=0.1)
    for _ in range(3):
        await send(limiter, clock, rtt_s=0.1)
    grown = lane.rate_per_s
    assert grown > 2.0
    for _ in range(20):  # every answer now takes 1 s
        await send(limiter, clock, rtt_s=1.0)
    assert lane.srtt_s is not None and lane.srtt_s > 2 * 0.1
    held = lane.rate_per_s
    await send(limiter, clock, rtt_s=1.0)
    assert lane.rate_per_s == held


async def test_rate_stays_between_floor_and_ceiling() -> None:
    """Endless successes stop at the ceiling, endless 429s at the floor."""
    clock = FakeClock()
    limiter = limiter_on(clock)
    for _ in range(500):
        await send(limiter, clock)
    assert limiter.lane().rate_per_s == POLICY.max_rate_per_s
    ticket = await send(limiter, clock)
    for _ in range(50):
        limiter.record_rate_limited(ticket, 0.0, announced=False)
        clock.now += 1.0
    assert limiter.lane().rate_per_s == POLICY.min_rate_per_s


async def test_the_ceiling_holds_both_endpoints_together() -> None:
    """max_rate_per_s caps the key: two lanes at 20/s each still send 20/s in all."""
    clock = FakeClock()
    policy = replace(POLICY, initial_rate_per_s=20.0)
    limiter = limiter_on(clock, policy)
    sent: list[float] = []

    async def stream(lane: str) -> None:
        for _ in range(10):
            sent.append((await send(limiter, clock, lane)).sent_at)

    await asyncio.gather(stream("v1"), stream("v2"))
    span = max(sent) - min(sent)
    assert len(sent) == 20 and span >= 19 / 20.0 - 1e-9


async def test_window_caps_requests_in_flight() -> None:
    """No more requests are in flight at once than the lane's window allows."""
    clock = FakeClock()
    fast = RatePolicy(initial_rate_per_s=1000.0, max_concurrency=3)
    limiter = limiter_on(clock, fast)
    in_flight = peak = 0
    answer = asyncio.Event()

    async def request() -> None:
        nonlocal in_flight, peak
        async with limiter.slot("v1") as ticket:
            in_flight += 1
            peak = max(peak, in_flight)
            await answer.wait()
            in_flight -= 1
        limiter.record_success(ticket)

    tasks = [asyncio.ensure_future(request()) for _ in range(12)]
    for _ in range(100):
        await asyncio.sleep(0)
    assert in_flight == 2  # before any round trip is measured the window is 2
    answer.set()
    await asyncio.gather(*tasks)
    assert peak <= 3
    window = limiter.lane("v1").window
    assert 1 <= window <= 3


async def test_a_lane_in_slow_start_stops_doubling_at_a_rate_another_lane_settled_at() -> None:
    """Once one endpoint found its limit, the other no longer doubles past that rate blind."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=4.0))
    v1, v2 = limiter.lane("v1"), limiter.lane("v2")
    ticket = await send(limiter, clock, "v1")
    limiter.record_rate_limited(ticket, 0.0, announced=False)  # v1: 4/s -> 2/s
    assert (v1.rate_per_s, v1.limit_per_s) == (2.0, 2.0)
    for _ in range(3):
        await send(limiter, clock, "v2")
    assert v2.limit_per_s == 2.0
    assert 2.0 <= v2.rate_per_s < 2.5  # probing slowly above it, not doubling


@pytest.mark.parametrize(
    ("rate", "settled_at", "after"),
    [
        (2.0, 8.0, RateState(2.0)),  # below it: keeps doubling from its own rate, not lifted
        (8.0, 8.0, RateState(8.0, limit_per_s=8.0)),
        (12.0, 8.0, RateState(8.0, limit_per_s=8.0)),  # past it: back to it, probing from there
    ],
)
def test_slow_start_ends_only_at_or_above_the_rate_another_lane_settled_at(
    rate: float, settled_at: float, after: RateState
) -> None:
    """A lane in slow start that has not reached another lane's settled rate is left alone."""
    lane = Lane("v1", POLICY)
    lane.state = RateState(rate)
    lane.leave_slow_start_at(settled_at)
    assert lane.state == after


def test_a_lane_leaving_slow_start_takes_the_other_lanes_limit_too() -> None:
    """The other lane settled at 9/s below a limit of 10/s: this one recovers to 10 too."""
    lane = Lane("v2", POLICY)
    lane.state = RateState(30.0)
    lane.leave_slow_start_at(9.0, 10.0)
    assert lane.state == RateState(9.0, limit_per_s=10.0)


async def test_requests_of_a_lane_go_in_the_order_they_asked() -> None:
    """First come, first served within a lane: page N is never overtaken by page N + 1."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=1.0))
    order: list[int] = []

    async def request(n: int) -> None:
        async with limiter.slot("v1"):
            order.append(n)

    await asyncio.gather(*(request(n) for n in range(8)))
    assert order == list(range(8))


async def test_a_quiet_endpoint_leaves_room_for_the_other() -> None:
    """When v1 has sent nothing for a while, v2 may climb to its rate plus v1's."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=100.0))
    v2 = limiter.lane("v2")
    busy = await send(limiter, clock, "v1")
    v1_rate = limiter.lane("v1").rate_per_s
    ticket = await send(limiter, clock, "v2")
    limiter.record_rate_limited(ticket, 0.0, announced=False)
    limit_while_busy = v2.limit_per_s
    assert limit_while_busy is not None
    clock.now = busy.sent_at + 0.3  # v1 sent a moment ago: not quiet yet
    await send(limiter, clock, "v2")
    assert v2.limit_per_s == limit_while_busy
    clock.now = busy.sent_at + 5.0
    await send(limiter, clock, "v2")
    assert v2.limit_per_s == pytest.approx(limit_while_busy + v1_rate)
    for _ in range(20):  # v1's rate is taken over once: the limit does not climb with the rate
        await send(limiter, clock, "v2")
    assert v2.limit_per_s == pytest.approx(limit_while_busy + v1_rate)
    assert v2.rate_per_s > limit_while_busy  # climbing towards it meanwhile


async def test_a_quiet_endpoint_lends_nothing_when_quotas_are_per_endpoint() -> None:
    """Separate budgets: v1 going quiet frees nothing of v2's, so v2's limit stays its own."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=1000.0,
                                        max_concurrency=8))  # fmt: skip
    for lane in ("v1", "v2"):
        await send(limiter, clock, lane, rtt_s=0.1)
    await _budget_runs_out_on_v1(limiter, clock, "aaa")
    clock.now += 0.5
    v2 = limiter.lane("v2")
    await send(limiter, clock, "v2")
    assert limiter.scope == "endpoint"
    limiter.record_rate_limited(await send_only(limiter, "v2"), 0.0, announced=False)
    limit = v2.limit_per_s
    clock.now += 5.0  # v1 quiet for a while
    for _ in range(5):
        await send(limiter, clock, "v2")
    assert v2.limit_per_s == limit


async def test_lanes_share_a_budget_evenly_once_it_shows_to_be_one() -> None:
    """Each lane cut from what it alone got through (v1 more than v2); once their answers show
    one budget, both get half of what they found together, so neither backfill trails."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, max_concurrency=8))
    v1, v2 = limiter.lane("v1"), limiter.lane("v2")
    for lane in ("v1", "v2"):
        await send(limiter, clock, lane, rtt_s=0.1)
    v1.state = RateState(rate_per_s=6.0, limit_per_s=6.0)
    v2.state = RateState(rate_per_s=2.0, limit_per_s=2.0)
    v1_tickets = [await send_only(limiter, "v1") for _ in range(3)]
    v2_ticket = await send_only(limiter, "v2")
    clock.now += 0.1
    for ticket in v1_tickets:
        limiter.record_rate_limited(ticket, 0.0, announced=False)
    assert limiter.scope == "unknown"
    v1_alone = v1.rate_per_s  # 3/s: its own cut
    limiter.record_rate_limited(v2_ticket, 0.0, announced=False)  # refused too: one budget
    clock.now += 0.2  # the window's answers are all in
    assert limiter.scope == "key"
    v2_alone = RateState(2.0, 2.0).after_rate_limited(limiter.policy, None).rate_per_s
    assert v1.rate_per_s == v2.rate_per_s == pytest.approx((v1_alone + v2_alone) / 2)
    assert v1.limit_per_s == v2.limit_per_s == pytest.approx((v1_alone + v2_alone) / 2)


async def _budget_runs_out_on_v1(limiter: RateLimiter, clock: FakeClock, v2: str) -> Ticket:
    """v1 and v2 both have requests under way when v1's budget runs out; v2's answers are `v2`
    ("a" accepted, "r" refused).  Returns v1's refused ticket, answered with Retry-After: 30."""
    v1_tickets = [await send_only(limiter, "v1") for _ in range(3)]
    v2_tickets = [await send_only(limiter, "v2") for _ in v2]
    clock.now += 0.1
    first = v1_tickets[0]
    limiter.record_rate_limited(first, 30.0, announced=True)
    for ticket in v1_tickets[1:]:
        limiter.record_rate_limited(ticket, 30.0, announced=True)
    for ticket, outcome in zip(v2_tickets, v2, strict=True):
        if outcome == "a":
            limiter.record_success(ticket)
        else:
            limiter.record_rate_limited(ticket, 30.0, announced=True)
    return first


async def send_only(limiter: RateLimiter, lane: str) -> Ticket:
    """A request sent now whose answer the test reports later."""
    async with limiter.slot(lane) as ticket:
        pass
    return ticket


@pytest.mark.parametrize(
    ("v2_answers", "scope"),
    [("aaa", "endpoint"), ("rrr", "key"), ("arr", "unknown")],
)
async def test_an_announced_wait_holds_the_other_endpoint_unless_quotas_are_per_endpoint(
    v2_answers: str, scope: str
) -> None:
    """Once the answers under way show separate budgets, v1's Retry-After no longer holds v2;
    while they show one budget (or nothing yet), it does."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=1000.0,
                                        max_concurrency=8))  # fmt: skip
    for lane in ("v1", "v2"):  # learn the round trip, so windows are wide enough
        await send(limiter, clock, lane, rtt_s=0.1)
    await _budget_runs_out_on_v1(limiter, clock, v2_answers)
    reopens = clock.now + 30.0 - 0.5
    assert limiter.not_before >= reopens  # nothing decided within the round trips
    clock.now += 0.5  # the window's answers are all in
    v2 = await send(limiter, clock, "v2")
    assert limiter.scope == scope
    if scope == "endpoint":
        assert v2.sent_at < reopens
    else:
        assert v2.sent_at >= reopens
    v1 = await send(limiter, clock, "v1")
    assert v1.sent_at >= reopens  # v1's own announced wait is always honoured in full


async def test_endpoints_take_turns_at_the_ceiling() -> None:
    """Under SYNCD_MAX_REQUESTS_PER_S both endpoints get their turns: neither starves."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, initial_rate_per_s=20.0, max_concurrency=8))
    sent: list[tuple[float, str]] = []

    async def stream(lane: str) -> None:
        for _ in range(10):
            sent.append(((await send(limiter, clock, lane)).sent_at, lane))

    await asyncio.gather(stream("v1"), stream("v2"))
    first_half = [lane for _, lane in sorted(sent)[:10]]
    assert 4 <= first_half.count("v1") <= 6


async def test_requests_held_at_a_gate_go_at_the_lanes_pace_when_it_opens() -> None:
    """Slots granted, then a gate closes before the requests are written: when it opens
    they go one request interval apart, not in one burst -- not on the gate's credit either:
    they were let in under the window before the cut."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=10.0))
    tickets = [await send_only(limiter, "v1") for _ in range(3)]
    limiter.record_rate_limited(tickets[0], 5.0, announced=True)
    interval = 1 / limiter.lane("v1").rate_per_s  # after the cut
    await asyncio.gather(*(limiter.hold(ticket) for ticket in tickets))
    sent = sorted(ticket.sent_at for ticket in tickets)
    assert sent[0] >= 5.0
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps == pytest.approx([interval, interval], abs=0.01)


def _settled_pair(clock: FakeClock, scope: QuotaScope) -> tuple[RateLimiter, Lane, Lane]:
    """v1 and v2 settled at 5/s each, the quota scope known (or not) to be `scope`."""
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, recovery_share_per_s=1.0))
    v1, v2 = limiter.lane("v1"), limiter.lane("v2")
    for lane in (v1, v2):
        lane.state = RateState(rate_per_s=5.0, limit_per_s=5.0)
    limiter._scope.scope = scope
    return limiter, v1, v2


async def _busy(limiter: RateLimiter, clock: FakeClock, lane: str, seconds: float) -> None:
    """`lane` sends, paced, for `seconds` (each answer at once)."""
    end = clock.now + seconds
    while clock.now < end:
        await send(limiter, clock, lane)


async def test_a_loan_goes_back_when_the_lender_sends_again() -> None:
    """Under one budget, v2 takes over quiet v1's 5/s and returns it once v1 sends again;
    then v1, quiet in its turn, lends only its own 5/s, not what v2 had borrowed: a limit
    never counts the 10/s they found together twice."""
    clock = FakeClock()
    limiter, v1, v2 = _settled_pair(clock, QuotaScope.KEY)
    clock.now = 10.0  # v1 sent nothing for a while
    await _busy(limiter, clock, "v2", 3.0)
    assert v2.limit_per_s == pytest.approx(10.0)
    assert v2.rate_per_s > 8.0
    await send(limiter, clock, "v1")  # v1 is back
    await send(limiter, clock, "v2")
    assert v2.limit_per_s == pytest.approx(5.0) and v2.rate_per_s <= 5.0
    clock.now += 5.0  # now v2 is quiet
    await _busy(limiter, clock, "v1", 3.0)
    assert v1.limit_per_s == pytest.approx(10.0)  # 5 + v2's own 5, not + the 10 it had


async def test_a_loan_that_ended_in_a_rate_limit_is_not_asked_again() -> None:
    """Scope unknown: v2's climb into quiet v1's room is refused while v1 stays quiet (so the
    room was never v2's); v2 does not borrow from v1 again."""
    clock = FakeClock()
    limiter, _, v2 = _settled_pair(clock, QuotaScope.UNKNOWN)
    clock.now = 10.0
    await send(limiter, clock, "v2")
    assert v2.limit_per_s == pytest.approx(10.0) and v2.borrowed == {"v1": 5.0}
    limiter.record_rate_limited(await send_only(limiter, "v2"), 0.0, announced=False)
    assert v2.borrowed == {} and v2.no_loans == {"v1"}
    limit = v2.limit_per_s
    await _busy(limiter, clock, "v2", 2.0)
    assert v2.borrowed == {}
    assert v2.limit_per_s == limit


async def test_the_scope_waits_for_the_slower_endpoints_answers() -> None:
    """v1 (100 ms round trips) runs out of budget while v2 (200 ms) has requests under way.
    v2's first answer was accepted; three refused ones, sent in the same window, arrive only
    after 1.5 of v1's round trips: they still count, and the budget reads as one."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=1000.0,
                                        max_concurrency=8))  # fmt: skip
    await send(limiter, clock, "v1", rtt_s=0.1)
    await send(limiter, clock, "v2", rtt_s=0.2)
    v1_tickets = [await send_only(limiter, "v1") for _ in range(3)]
    v2_tickets = [await send_only(limiter, "v2") for _ in range(4)]
    clock.now += 0.1
    for ticket in v1_tickets:
        limiter.record_rate_limited(ticket, 30.0, announced=True)
    clock.now += 0.05
    limiter.record_success(v2_tickets[0])
    clock.now += 0.12  # past 1.5 of v1's round trips: a request looks at the gate
    assert limiter.scope == "unknown"
    clock.now += 0.03
    for ticket in v2_tickets[1:]:
        limiter.record_rate_limited(ticket, 30.0, announced=True)
    clock.now += 0.2  # 1.5 of v2's round trips after v1's refusal came: all answers in
    assert limiter.scope == "key"


async def _sent_after_a_gate(limiter: RateLimiter, clock: FakeClock, count: int) -> list[Ticket]:
    """`count` requests, one after the other, right after a 5 s gate on lane v1 closed at
    t=0 by a cut from 8/s to 4/s (the window never full)."""
    lane = limiter.lane("v1")
    lane.state = RateState(rate_per_s=8.0)
    limiter.record_rate_limited(Ticket(lane, 0.0, paced=True), 5.0, announced=False)
    assert lane.rate_per_s == 4.0
    return [await send(limiter, clock, "v1") for _ in range(count)]


async def test_a_gate_earns_credit_for_what_upstream_refilled_meanwhile() -> None:
    """Upstream's bucket refilled while the gate was closed (at most a second of it, at the
    rate the cut left: 4 requests): that many go at once when it opens, then the pace."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, max_concurrency=16))
    tickets = await _sent_after_a_gate(limiter, clock, 7)
    sent = [t.sent_at for t in tickets]
    interval = 1 / limiter.lane("v1").rate_per_s
    assert sent[:5] == pytest.approx([5.0] * 5)  # the first at its pace, four on credit
    assert [t.on_credit for t in tickets[:5]] == [False, True, True, True, True]
    gaps = [b - a for a, b in itertools.pairwise(sent[4:])]
    assert gaps == pytest.approx([interval, interval], rel=0.05)
    assert not tickets[5].on_credit and not tickets[6].on_credit


async def test_credit_refused_means_gates_earn_none_from_then_on() -> None:
    """A request sent on credit was refused: upstream's burst is smaller than a second's
    worth, so the next gate is waited out and the pace resumes, no requests at once."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, max_concurrency=16))
    tickets = await _sent_after_a_gate(limiter, clock, 2)
    assert tickets[1].on_credit
    limiter.record_rate_limited(tickets[1], 5.0, announced=False)
    lane = limiter.lane("v1")
    assert (lane.refill_s, lane.credit) == (0.0, 0.0)
    after = [await send(limiter, clock, "v1") for _ in range(3)]
    assert not any(t.on_credit for t in after)
    gaps = [b.sent_at - a.sent_at for a, b in itertools.pairwise(after)]
    assert min(gaps) == pytest.approx(1 / lane.rate_per_s, rel=0.05)


async def test_the_ceiling_holds_requests_sent_on_credit() -> None:
    """Credit speeds a lane past its own pace, never past the key's opt-in ceiling."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=4.0, max_concurrency=16))
    tickets = await _sent_after_a_gate(limiter, clock, 4)
    gaps = [b.sent_at - a.sent_at for a, b in itertools.pairwise(tickets)]
    assert min(gaps) == pytest.approx(0.25, rel=0.01)


async def test_credit_not_spent_while_the_gates_second_lasts_is_void() -> None:
    """An hour after the gate the refill is long gone to others: requests go at the pace."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, max_concurrency=16))
    await _sent_after_a_gate(limiter, clock, 1)
    assert limiter.lane("v1").credit >= 1  # earned, not spent
    clock.now = 3600.0
    later = [await send(limiter, clock, "v1") for _ in range(3)]
    assert not any(t.on_credit for t in later)
    gaps = [b.sent_at - a.sent_at for a, b in itertools.pairwise(later)]
    assert min(gaps) == pytest.approx(1 / limiter.lane("v1").rate_per_s, rel=0.05)


async def test_a_new_cut_voids_the_credit_of_the_gate_before() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, max_concurrency=16))
    tickets = await _sent_after_a_gate(limiter, clock, 2)
    lane = limiter.lane("v1")
    assert lane.credit >= 1
    limiter.record_rate_limited(Ticket(lane, clock.now, paced=True), 0.5, announced=False)
    assert lane.credit == 0.0 and not tickets[0].on_credit


async def _climb_then_refused(limiter: RateLimiter, clock: FakeClock, rates: list[float]) -> Lane:
    """Lane v1 sends a second at each of `rates` (requests/s, all accepted), then is refused."""
    lane = limiter.lane("v1")
    for rate in rates:
        for _ in range(round(rate)):
            clock.now += 1 / rate
            limiter.record_success(Ticket(lane, clock.now, paced=False))
    limiter.record_rate_limited(Ticket(lane, clock.now, paced=True), 1.0, announced=False)
    return lane


async def test_the_first_cut_of_a_climbing_lane_takes_the_fitted_quota() -> None:
    """Climbing 10 -> 40/s into its first rate limit: the limit is the fitted token-bucket
    rate (bucketfit.py) over the lane's own accepted requests, not half the nominal rate."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=60.0))
    lane = limiter.lane("v1")
    lane_times: list[float] = []
    lane.on_success = _recording(lane.on_success, lane_times)  # type: ignore[method-assign]
    lane = await _climb_then_refused(limiter, clock, [10.0, 20.0, 40.0])
    expected = fitted_rate_per_s(lane_times, clock.now, burst_s=1.0, upper_per_s=60.0)
    assert expected is not None and 20.0 < expected < 40.0
    assert lane.limit_per_s == pytest.approx(expected)
    assert lane.rate_per_s == pytest.approx(0.9 * expected)


async def test_the_first_cut_of_a_steady_lane_halves() -> None:
    """Steady at 20/s for seconds, then refused: not a climb into a burst (the quota shrank,
    or others drained the bucket), so the first cut halves what was accepted."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=60.0))
    lane = await _climb_then_refused(limiter, clock, [20.0] * 5)
    assert lane.limit_per_s == pytest.approx(10.0, rel=0.05)


def _recording(method: Any, times: list[float]) -> Any:
    def wrapper(now: float, ticket: Ticket, **kwargs: Any) -> None:
        times.append(now)
        method(now, ticket, **kwargs)

    return wrapper


async def test_a_lane_leaving_slow_start_takes_the_others_own_limit_not_a_loan() -> None:
    """The settled lane borrowed the quiet lane's rate: the one leaving slow start takes
    the settled lane's own limit, not one swollen by a loan (of its own rate, even)."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=30.0))
    v1, v2 = limiter.lane("v1"), limiter.lane("v2")
    v2.state = RateState(9.0, limit_per_s=70.0)
    v2.borrowed = {"v1": 60.0}
    await send(limiter, clock, "v1")
    assert v1.limit_per_s == 10.0 and v1.rate_per_s <= 10.0


async def test_lanes_of_one_budget_take_the_quota_fitted_over_both_lanes() -> None:
    """Climbing together 10 -> 40/s into one shared bucket, each lane with half the requests:
    once the answers show one budget, the lanes split the quota fitted over all their accepted
    requests -- below what their own fits add up to, which read a bucket each."""
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None, initial_rate_per_s=60.0))
    v1, v2 = limiter.lane("v1"), limiter.lane("v2")
    accepted: list[float] = []
    for rate in (10.0, 20.0, 40.0):
        for i in range(round(rate)):
            clock.now += 1 / rate
            lane = v1 if i % 2 else v2
            limiter.record_success(Ticket(lane, clock.now - 0.1, False, answered_at=clock.now))
            accepted.append(clock.now)
    refused_at = clock.now
    first = Ticket(v1, refused_at - 0.1, paced=True, answered_at=refused_at)
    limiter.record_rate_limited(first, 1.0, announced=True)
    v1_own = v1.limit_per_s
    assert v1_own is not None
    clock.now += 0.01  # v2's request, sent in v1's window, met the same empty bucket
    v2_refused = Ticket(v2, refused_at - 0.05, paced=True, answered_at=clock.now)
    limiter.record_rate_limited(v2_refused, 1.0, announced=True)
    clock.now += 0.5
    assert limiter.scope == "key"
    together = fitted_rate_per_s(accepted, refused_at, burst_s=1.0, upper_per_s=1000.0)
    assert together is not None and together < 2 * v1_own
    assert v1.limit_per_s == v2.limit_per_s == pytest.approx(together / 2)
    assert v1.rate_per_s == v2.rate_per_s == pytest.approx(0.9 * together / 2)


@pytest.mark.parametrize(("share", "rate"), [(1.0, 10.01), (0.5, 10.005)])
def test_lanes_of_one_budget_probe_it_together(share: float, rate: float) -> None:
    """Above the known limit, a lane gains its share of the probe; below it, all it may."""
    probing = RateState(10.0, 10.0).after_success(
        POLICY, sending_s=0.1, rtt_s=0.1, probe_share=share
    )
    assert probing.rate_per_s == pytest.approx(rate)
    recovering = RateState(4.0, 8.0).after_success(
        POLICY, sending_s=0.25, rtt_s=0.1, probe_share=share
    )
    assert recovering.rate_per_s == pytest.approx(4.25)


async def test_busy_lanes_of_one_budget_share_the_probe() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, replace(POLICY, max_rate_per_s=None))
    v1, v2 = limiter.lane("v1"), limiter.lane("v2")
    limiter._scope.scope = QuotaScope.KEY
    v2.last_sent_at = clock.now  # busy
    assert limiter._probe_share([v2], clock.now) == 0.5
    clock.now += 5.0  # v2 quiet: v1 probes alone
    assert limiter._probe_share([v2], clock.now) == 1.0
    limiter._scope.scope = QuotaScope.ENDPOINT
    v2.last_sent_at = clock.now
    assert limiter._probe_share([v2], clock.now) == 1.0
    assert v1.limit_per_s is None
