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
met the same empty bucket and are refused as often as the endpoint's own
(at least `SAME_BUDGET` times its share): that settles the scope as `KEY`, for
good.  Under separate quotas they go through -- but not all of them when
both endpoints climbed side by side and the other's own budget ran out in
the same round trip, which one refusal must not read as a shared budget
(measured: the other endpoint's answers in the window went "aaaaaaar",
"aarara", "ararara" under quotas per endpoint, and "rrrrr" under one per
key): such an event says nothing, and a later one decides.  An event with at
least `STRONG_EVENT` refusals of its own while the other endpoint had
`MIN_ANSWERS` requests accepted and none refused settles it as `ENDPOINT` (a
weak event, one or two refusals, says nothing: a refilling bucket could let
the other's requests through).  Only that: under one budget whose refusals do
not all announce a wait, the other endpoint's answers are mixed too, and
reading them as a budget each would send it requests during the wait one of
them announced.  Refusals of an endpoint whose own event began first are that
event's, not evidence about this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

STRONG_EVENT = 3  # the limited endpoint's own refusals in the window
MIN_ANSWERS = 3  # the other endpoint's answers in the window
# The other endpoint's share of refused answers in the window, against the limited one's:
SAME_BUDGET = 0.75  # at least this much of it: one budget
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
    explained: frozenset[str] = frozenset()  # endpoints whose own event began first
    own_refusals: int = 0
    own_accepted: int = 0
    other_accepted: int = 0
    other_refused: int = 0

    def verdict(self) -> QuotaScope:
        """What this event's answers say (UNKNOWN: nothing either way)."""
        own = self.own_refusals / max(1, self.own_refusals + self.own_accepted)
        others = self.other_refused + self.other_accepted
        other = self.other_refused / others if others else 0.0
        if self.other_refused and other >= SAME_BUDGET * own:
            return QuotaScope.KEY
        strong = self.own_refusals >= STRONG_EVENT and self.other_accepted >= MIN_ANSWERS
        if strong and not self.other_refused:
            return QuotaScope.ENDPOINT
        return QuotaScope.UNKNOWN


class ScopeLearner:
    """Collects the evidence above and says what the scope is (UNKNOWN until it knows)."""

    def __init__(self) -> None:
        self.scope = QuotaScope.UNKNOWN
        self._checks: list[_Check] = []

    def on_event(self, endpoint: str, *, sent_at: float, now: float, rtt_s: float) -> None:
        """`endpoint` was refused for the first time in a while (a request sent at `sent_at`)."""
        if self.scope is not QuotaScope.KEY:
            explained = frozenset(c.limited for c in self._checks if c.since < sent_at)
            decide_at = now + ANSWERS_IN_RTTS * rtt_s
            self._checks.append(_Check(endpoint, sent_at, now, decide_at, explained - {endpoint}))

    def on_answer(self, endpoint: str, *, sent_at: float, refused: bool, now: float) -> None:
        """Any answer: counts for every open check whose window it was sent in."""
        for check in self._checks:
            if not check.since <= sent_at <= check.until or endpoint in check.explained:
                continue
            if endpoint == check.limited:
                check.own_refusals += refused
                check.own_accepted += not refused
            elif refused:
                check.other_refused += 1
            else:
                check.other_accepted += 1
        self.settle(now)

    def settle(self, now: float) -> QuotaScope:
        """Decide what the evidence allows; drop checks whose answers are all in."""
        open_checks = []
        for check in self._checks:
            if now < check.decide_at:
                open_checks.append(check)
                continue
            verdict = check.verdict()
            if verdict is QuotaScope.KEY:
                self.scope = QuotaScope.KEY  # refused alike: one budget, for good
                self._checks.clear()
                return self.scope
            if verdict is QuotaScope.ENDPOINT:
                self.scope = verdict
        self._checks = open_checks
        return self.scope
