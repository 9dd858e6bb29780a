"""Pure: does one rate-limit budget cover both endpoints, or does each have its own?

CoreClaw does not say.  The answer decides what an announced wait
(`Retry-After`) on one endpoint means for the other: under a quota per key it
holds both, under quotas per endpoint only its own.  Finding out by sending
the other endpoint a request during such a wait would be exactly the early
request a per-key server forbids, so the evidence comes from requests that
were under way anyway:

When an endpoint's budget runs out (its rate limit event: several requests
refused in a row), look at the other endpoint's requests sent *after* the
first refused one and before its answer arrived.  Under a shared quota they
met the same empty bucket and are refused too; under separate quotas they go
through.  One refused request of the other endpoint in that window settles
the scope as `KEY`, for good.  An event with at least `STRONG_EVENT` refusals
of its own while the other endpoint had `MIN_ANSWERS` requests accepted and
none refused settles it as `ENDPOINT` (a weak event, one or two refusals,
says nothing: a refilling bucket could let the other's requests through).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

STRONG_EVENT = 3  # the limited endpoint's own refusals in the window
MIN_ANSWERS = 3  # the other endpoint's answers in the window
# The window's last requests went when its first refusal came back; their answers are
# in one round trip later, give or take the jitter of a far API's round trips.
ANSWERS_IN_RTTS = 1.5


class QuotaScope(StrEnum):
    UNKNOWN = "unknown"
    KEY = "key"  # both endpoints share one budget
    ENDPOINT = "endpoint"  # each endpoint has its own


@dataclass(slots=True)
class _Check:
    limited: str  # the endpoint whose budget ran out
    since: float  # when its first refused request was sent
    until: float  # when that refusal arrived: the window of requests under way
    decide_at: float  # by then the window's answers are in
    own_refusals: int = 0
    other_accepted: int = 0
    other_refused: int = 0


class ScopeLearner:
    """Collects the evidence above and says what the scope is (UNKNOWN until it knows)."""

    def __init__(self) -> None:
        self.scope = QuotaScope.UNKNOWN
        self._checks: list[_Check] = []

    def on_event(self, endpoint: str, *, sent_at: float, now: float, rtt_s: float) -> None:
        """`endpoint` was refused for the first time in a while (a request sent at `sent_at`)."""
        if self.scope is not QuotaScope.KEY:
            self._checks.append(_Check(endpoint, sent_at, now, now + ANSWERS_IN_RTTS * rtt_s))

    def on_answer(self, endpoint: str, *, sent_at: float, refused: bool, now: float) -> None:
        """Any answer: counts for every open check whose window it was sent in."""
        for check in self._checks:
            if not check.since <= sent_at <= check.until:
                continue
            if endpoint == check.limited:
                check.own_refusals += refused
            elif refused:
                check.other_refused += 1
            else:
                check.other_accepted += 1
        self.settle(now)

    def settle(self, now: float) -> QuotaScope:
        """Decide what the evidence allows; drop checks whose answers are all in."""
        if any(check.other_refused for check in self._checks):
            self.scope = QuotaScope.KEY  # refused together: one budget
            self._checks.clear()
            return self.scope
        open_checks = []
        for check in self._checks:
            if now < check.decide_at:
                open_checks.append(check)
            elif check.own_refusals >= STRONG_EVENT and check.other_accepted >= MIN_ANSWERS:
                self.scope = QuotaScope.ENDPOINT
        self._checks = open_checks
        return self.scope
