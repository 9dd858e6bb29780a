"""Pure waiting rules: how long to wait before the next try.

No I/O and no aiohttp here, so every rule is a table-driven test.  The client
feeds in what upstream said (`Retry-After`) and a random number; these
functions answer in seconds.
"""

from __future__ import annotations

import datetime as dt
import math
from email.utils import parsedate_to_datetime

# 2**64 seconds is already far beyond any cap; clamping the exponent keeps
# `base * 2**attempt` from overflowing a float on absurd attempt counts.
_MAX_EXPONENT = 64


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header, or None when absent or unusable.

    RFC 9110 allows delta-seconds (`120`) or an HTTP-date.  Fractions (`1.5`)
    are accepted because some proxies send them.  Negative, non-finite and
    garbage values are None: the caller then falls back to its own backoff.
    A date already in the past means "now" (0.0), typically a skewed clock.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    # Every HTTP-date format starts with a day name, so a leading digit or
    # sign means delta-seconds and "-5" is rejected rather than date-parsed.
    if text[0].isdigit() or text[0] in "+-.":
        return _parse_delta_seconds(text)
    return _parse_http_date(text, now)


def _parse_delta_seconds(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _parse_http_date(text: str, now: dt.datetime) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP-dates are GMT by definition; parsedate gives naive for "-0000".
        when = when.replace(tzinfo=dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay_s(attempt: int, *, base_s: float, cap_s: float, rand: float) -> float:
    """Exponential backoff with full jitter: `rand * min(cap, base * 2**attempt)`.

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter")
    spreads retries of many clients evenly instead of in synchronized waves.
    `attempt` counts from 0; `rand` is in [0, 1) and is clamped to it.
    """
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    ceiling = min(cap_s, base_s * 2.0**exponent)
    return min(max(rand, 0.0), 1.0) * ceiling


def retry_wait_s(
    retry_after_s: float | None,
    attempt: int,
    *,
    base_s: float,
    floor_s: float,
    cap_s: float,
    rand: float,
) -> float:
    """How long to wait after a rate-limit (or other retryable) answer.

    An explicit `Retry-After` wins and is honoured in full even above `cap_s`:
    cutting it short only earns another 429.  It is floored at `floor_s` so a
    `Retry-After: 0` cannot turn into a tight loop.  Without it: full-jitter
    exponential backoff, floored for the same reason (jitter can draw 0) and
    capped at `cap_s`.
    """
    if retry_after_s is not None:
        return max(retry_after_s, floor_s)
    jittered = backoff_delay_s(attempt, base_s=base_s, cap_s=cap_s, rand=rand)
    return min(cap_s, max(floor_s, jittered))
