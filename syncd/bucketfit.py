"""What upstream's quota is, read off the first rate limit (pure).

Until its first rate limit a lane knows nothing of upstream's quota: it has
only sent more and more, and everything got through.  When upstream counts
requests with a token bucket -- the usual kind: `rate` tokens a second, up to
a burst -- the first refusal comes when the burst is spent, and the accepted
requests before it then tell the rate, given the burst's size.  syncd assumes
a burst of a second's worth (as `GATE_CREDIT_S` does): the rate is the one at
which such a bucket, fed the lane's accepted requests, would have run dry just
when the refusal came.  A larger real burst makes it read high (the next rate
limit measures again), a smaller one low; ratemath.py keeps it between half
and all of what was accepted in the last second.
"""

from __future__ import annotations

from collections.abc import Sequence

SEARCH_STEPS = 40  # bisection steps: 2^-40 of the range
MIN_ACCEPTED = 4  # fewer accepted requests say nothing


def bucket_level(
    accepted_at: Sequence[float], at: float, rate_per_s: float, burst_s: float
) -> float:
    """Tokens left at `at` in a bucket of `rate_per_s` and a burst of `burst_s` worth,
    full at the first accepted request and spent one per accepted request."""
    burst = rate_per_s * burst_s
    level, previous = burst, accepted_at[0] if accepted_at else at
    for t in accepted_at:
        level = min(burst, level + rate_per_s * (t - previous)) - 1.0
        previous = t
    return min(burst, level + rate_per_s * (at - previous))


def fitted_rate_per_s(
    accepted_at: Sequence[float], refused_at: float, *, burst_s: float, upper_per_s: float
) -> float | None:
    """The lowest bucket rate (at most `upper_per_s`) that still has a token at
    `refused_at` after `accepted_at` (sorted): the rate at which the bucket just ran
    dry there.  None with too few accepted requests to tell."""
    if len(accepted_at) < MIN_ACCEPTED or upper_per_s <= 0 or burst_s <= 0:
        return None
    low, high = 0.0, upper_per_s
    if bucket_level(accepted_at, refused_at, high, burst_s) < 1.0:
        return upper_per_s  # even that rate ran dry: the answer is above the range
    for _ in range(SEARCH_STEPS):
        middle = (low + high) / 2
        if bucket_level(accepted_at, refused_at, middle, burst_s) < 1.0:
            low = middle
        else:
            high = middle
    return high
