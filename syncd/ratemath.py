"""A lane's rate and how it moves (pure): the maths of the request controller.

`RatePolicy` holds the limits and the factors; `RateState` is one lane's rate
and known limit, moved by an answer (`after_success`: slow start, recovery,
the probe) or a rate limit (`after_rate_limited`: the cut); `accepted_rate_per_s`,
`next_send_at` and `window_for` are what the controller measures and paces
with.  No I/O and no clock: the caller passes the times.  Why each move is
the way it is: the controller's docstring (ratelimit.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

# Fewer accepted requests than this in the window say nothing about upstream's limit.
MIN_MEASURED = 4
# With no ceiling set, rates stay below this (a bound for the arithmetic, not a policy).
RATE_BOUND_PER_S = 10_000.0


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """Limits, and how a lane's rate and window move between them.  Rates in requests/s."""

    max_rate_per_s: float | None = None  # opt-in ceiling for the key (both lanes together)
    min_rate_per_s: float = 0.1
    initial_rate_per_s: float = 10.0  # per lane, before the first answer
    # Slow start's growth per round trip of answers.  Not TCP's 2: the first rate limit
    # refuses every request in flight when upstream's hidden burst runs out, and those
    # grow with the overshoot; at 1.5 a far API's first event cost 18 refusals, not ~29,
    # and 10 -> 1,000 requests/s takes 12 round trips (doubling: 7) where the round trip
    # is short (see limited_slow_start_in_flight for a far API).
    slow_start_growth: float = 1.5
    # Limited slow start (after RFC 3742): upstream's burst is measured in seconds, not
    # round trips, and when it runs out every request in flight is refused.  So once
    # that many would be, growth is held to `limited_growth_per_s`: a far API's first
    # event cost 7-8 refusals at x1.3 a second, 8-9 at x1.5, 9-11 at x2, ~20 unheld; a
    # near one (low round trips) is not held at all.  Slower is free above the quota (the
    # burst is spent either way; the first cut reads the quota off it, bucketfit.py) and
    # costs a generous quota the time to climb to it: at 100/s and 150 ms, about a second.
    limited_slow_start_in_flight: float = 4.0
    limited_growth_per_s: float = 1.3  # the rate's growth per second, once held
    max_concurrency: int = 32  # requests in flight per lane, at most
    latency_tolerance: float = 2.0  # no growth while srtt > this x the lowest rtt
    window_headroom: float = 1.5  # window = headroom x rate x smoothed rtt (+1)
    increase_per_s: float = 1.0  # requests/s gained per second, up to the known limit, at least
    recovery_share_per_s: float = 0.25  # ... or this share of the known limit per second
    probe_per_s: float = 0.1  # ... above it, at first
    probe_doubling_s: float = 4.0  # the probe's gain doubles this often while it holds (0: never)
    decrease_factor: float = 0.9  # share of the accepted rate to drop to
    blind_decrease_factor: float = 0.5  # share of the nominal rate, when nothing was measured
    window_s: float = 10.0  # the accepted rate looks back at most this far (0: never measure)

    def __post_init__(self) -> None:
        ceiling = self.ceiling_per_s
        if not 0 < self.min_rate_per_s <= self.initial_rate_per_s <= ceiling:
            raise ValueError("need 0 < min_rate_per_s <= initial_rate_per_s <= max_rate_per_s")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if not (0 < self.decrease_factor < 1 and 0 < self.blind_decrease_factor < 1):
            raise ValueError("decrease factors must be between 0 and 1")
        if min(self.slow_start_growth, self.limited_growth_per_s) <= 1:
            raise ValueError("slow_start_growth and limited_growth_per_s must be > 1")
        if self.limited_slow_start_in_flight <= 0:
            raise ValueError("limited_slow_start_in_flight must be > 0")
        if self.latency_tolerance < 1 or self.window_headroom <= 0:
            raise ValueError("latency_tolerance must be >= 1 and window_headroom > 0")
        steps = (
            self.increase_per_s,
            self.recovery_share_per_s,
            self.probe_per_s,
            self.probe_doubling_s,
            self.window_s,
        )
        if min(steps) < 0:
            raise ValueError("increases, the probe doubling time and window_s must be >= 0")

    @property
    def ceiling_per_s(self) -> float:
        return RATE_BOUND_PER_S if self.max_rate_per_s is None else self.max_rate_per_s


@dataclass(frozen=True, slots=True)
class RateState:
    """A lane's allowed rate and its last known limit (None: in slow start).

    `probe_s` is the sending time spent at or above the known limit since the
    last cut (the probe speeds up with it).
    """

    rate_per_s: float
    limit_per_s: float | None = None
    probe_s: float = 0.0

    @classmethod
    def initial(cls, policy: RatePolicy) -> RateState:
        return cls(rate_per_s=policy.initial_rate_per_s)

    def gain_per_s(self, policy: RatePolicy) -> float:
        """How fast the rate grows after slow start, in requests/s per second of sending."""
        if self.limit_per_s is None:
            return policy.increase_per_s
        if self.rate_per_s < self.limit_per_s:
            return max(policy.increase_per_s, policy.recovery_share_per_s * self.limit_per_s)
        if policy.probe_doubling_s <= 0:
            return policy.probe_per_s
        # Exponential, like a TCP that finds a path freed: capacity upstream may have
        # grown (the other endpoint went idle under a shared quota, a plan upgrade).
        doublings = min(self.probe_s / policy.probe_doubling_s, 30.0)
        return float(policy.probe_per_s * 2.0**doublings)

    def after_success(
        self,
        policy: RatePolicy,
        *,
        sending_s: float,
        rtt_s: float,
        base_rtt_s: float | None = None,
        probe_share: float = 1.0,
    ) -> RateState:
        """Growth for one answer to a request that waited for the controller.

        Slow start: a round trip's worth of answers multiplies the rate by
        `slow_start_growth` (one answer never more than that) -- but no faster
        than `limited_growth_per_s` a second once `rate x base_rtt_s` (the
        lowest round trip: the requests in flight upstream, not this process's
        own queueing) reaches `limited_slow_start_in_flight`.  After it: additive, for `sending_s`
        seconds of sending, counted for at most one request interval, so an
        idle spell earns nothing; above the known limit, `probe_share` of the
        probe's gain (the lanes of one budget probe it together).
        """
        if self.limit_per_s is None:
            gain = policy.slow_start_growth - 1.0
            step = gain * self.rate_per_s / max(1.0, self.rate_per_s * max(rtt_s, 0.0))
            exposed = self.rate_per_s * (rtt_s if base_rtt_s is None else base_rtt_s)
            if exposed >= policy.limited_slow_start_in_flight:
                # About `rate` answers a second, each adding ln(growth): x growth a second.
                step = min(step, math.log(policy.limited_growth_per_s))
            return replace(self, rate_per_s=min(policy.ceiling_per_s, self.rate_per_s + step))
        credit_s = min(max(sending_s, 0.0), 1.0 / self.rate_per_s)
        probing = self.rate_per_s >= self.limit_per_s
        gain = self.gain_per_s(policy) * (probe_share if probing else 1.0)
        step = min(gain * credit_s, self.rate_per_s)
        return replace(
            self,
            rate_per_s=min(policy.ceiling_per_s, self.rate_per_s + step),
            probe_s=self.probe_s + credit_s if probing else self.probe_s,
        )

    def after_rate_limited(
        self, policy: RatePolicy, accepted_per_s: float | None, fitted_per_s: float | None = None
    ) -> RateState:
        """Multiplicative decrease below what upstream accepted, never below the floor.

        `accepted_per_s` is upstream's accepted rate since the previous rate
        limit (None: unknown, so the nominal rate is the basis).  The first
        rate limit ends slow start, and what was accepted until then includes
        upstream's burst, so that cut is the deep one (`blind_decrease_factor`)
        and the rate it leaves becomes the known limit (only the probe climbs
        above it) -- unless the quota was read off that first rate limit
        (`fitted_per_s`, bucketfit.py): kept between the deep cut's rate and
        the basis, it is then the basis, as a measured rate is.  Later ones
        measure the steady rate (`decrease_factor`), and the rate the cut
        starts from becomes the known limit.
        """
        basis = self.rate_per_s if accepted_per_s is None else min(self.rate_per_s, accepted_per_s)
        first = self.limit_per_s is None or accepted_per_s is None
        if first and fitted_per_s is not None and accepted_per_s is not None:
            basis = min(basis, max(fitted_per_s, basis * policy.blind_decrease_factor))
            first = False
        factor = policy.blind_decrease_factor if first else policy.decrease_factor
        rate = max(policy.min_rate_per_s, basis * factor)
        return RateState(rate_per_s=rate, limit_per_s=rate if first else basis)


def accepted_rate_per_s(
    success_times: Iterable[float], *, since: float, now: float
) -> float | None:
    """Successes per second in `(since, now]`, or None when too few to mean anything."""
    span_s = now - since
    count = sum(1 for t in success_times if since < t <= now)
    if count < MIN_MEASURED or span_s <= 0:
        return None
    return count / span_s


def next_send_at(
    *, now: float, last_sent_at: float | None, rate_per_s: float, not_before: float
) -> float:
    """The earliest time the next request may go out.

    Requests are spaced `1 / rate` apart, and none goes before `not_before`.
    """
    earliest = max(now, not_before)
    if last_sent_at is None:
        return earliest
    return max(earliest, last_sent_at + 1.0 / rate_per_s)


def window_for(policy: RatePolicy, rate_per_s: float, rtt_s: float | None) -> int:
    """Requests in flight that sustain `rate_per_s` over round trips of `rtt_s`, with room."""
    if rtt_s is None:
        return min(policy.max_concurrency, 2)  # nothing measured yet: one round trip's probe
    wanted = math.ceil(policy.window_headroom * rate_per_s * rtt_s) + 1
    return max(1, min(policy.max_concurrency, wanted))
