"""Learning whether a rate-limit budget is the key's or each endpoint's, from answers under way."""

from __future__ import annotations

import pytest

from syncd.quotascope import MIN_ANSWERS, STRONG_EVENT, QuotaScope, ScopeLearner

A, B = "/api/v1/run/list", "/api/v2/worker-runs"


def event(learner: ScopeLearner, *, own_refusals: int, other: str) -> None:
    """A's budget runs out at t=1.0 (first refused request sent at 0.9, rtt 0.1); then the
    answers of requests sent in that window arrive: A's refusals and B's `other` ("a" accepted,
    "r" refused), all before t=1.3."""
    learner.on_event(A, sent_at=0.9, now=1.0, rtt_s=0.1)
    learner.on_answer(A, sent_at=0.9, refused=True, now=1.0)
    for i in range(own_refusals - 1):
        learner.on_answer(A, sent_at=0.92 + i / 100, refused=True, now=1.05)
    for i, outcome in enumerate(other):
        learner.on_answer(B, sent_at=0.91 + i / 100, refused=outcome == "r", now=1.1)


@pytest.mark.parametrize(
    ("own_refusals", "other", "before_deadline", "after_deadline"),
    [
        (STRONG_EVENT, "a" * MIN_ANSWERS, QuotaScope.UNKNOWN, QuotaScope.ENDPOINT),
        (STRONG_EVENT, "rrrrr", QuotaScope.UNKNOWN, QuotaScope.KEY),  # refused alike: one budget
        (STRONG_EVENT, "r", QuotaScope.UNKNOWN, QuotaScope.KEY),
        (STRONG_EVENT, "arrr", QuotaScope.UNKNOWN, QuotaScope.KEY),  # 3/4 of the own share
        # Measured under quotas per endpoint, the other's own budget running out as well;
        # mixed answers come under one budget too, when refusals announce no wait: no verdict
        (STRONG_EVENT, "aaaaaaar", QuotaScope.UNKNOWN, QuotaScope.UNKNOWN),
        (STRONG_EVENT, "aarara", QuotaScope.UNKNOWN, QuotaScope.UNKNOWN),
        (STRONG_EVENT, "ararara", QuotaScope.UNKNOWN, QuotaScope.UNKNOWN),
        (STRONG_EVENT, "arr", QuotaScope.UNKNOWN, QuotaScope.UNKNOWN),  # between: no verdict
        (STRONG_EVENT, "aar", QuotaScope.UNKNOWN, QuotaScope.UNKNOWN),  # too few accepted
        (STRONG_EVENT - 1, "aaaa", QuotaScope.UNKNOWN, QuotaScope.UNKNOWN),  # a weak event
        (STRONG_EVENT, "a" * (MIN_ANSWERS - 1), QuotaScope.UNKNOWN, QuotaScope.UNKNOWN),
        (5, "", QuotaScope.UNKNOWN, QuotaScope.UNKNOWN),  # the other endpoint was quiet
    ],
)
def test_evidence_from_one_event(
    own_refusals: int, other: str, before_deadline: QuotaScope, after_deadline: QuotaScope
) -> None:
    """Once the window's answers are in (1.5 round trips): the other endpoint refused about as
    often as this one: KEY; accepted enough and never refused while this one was refused
    enough: ENDPOINT; anything between: no verdict yet."""
    learner = ScopeLearner()
    event(learner, own_refusals=own_refusals, other=other)
    assert learner.scope is before_deadline
    assert learner.settle(now=1.25) is after_deadline


def test_answers_to_requests_sent_outside_the_window_do_not_count() -> None:
    """Requests the other endpoint sent before the first refused one, or after its answer
    arrived, say nothing about the bucket this event emptied."""
    learner = ScopeLearner()
    learner.on_event(A, sent_at=0.9, now=1.0, rtt_s=0.1)
    for _ in range(STRONG_EVENT):
        learner.on_answer(A, sent_at=0.95, refused=True, now=1.0)
    learner.on_answer(B, sent_at=0.5, refused=True, now=1.0)  # sent before: no KEY
    for sent_at in (1.01, 1.02, 1.03):  # sent after: no ENDPOINT
        learner.on_answer(B, sent_at=sent_at, refused=False, now=1.1)
    assert learner.settle(now=2.0) is QuotaScope.UNKNOWN


def test_key_is_for_good_and_endpoint_can_be_taken_back() -> None:
    """A later joint refusal turns ENDPOINT into KEY; nothing turns KEY back."""
    learner = ScopeLearner()
    event(learner, own_refusals=STRONG_EVENT, other="aaa")
    assert learner.settle(now=1.25) is QuotaScope.ENDPOINT
    learner.on_event(A, sent_at=4.9, now=5.0, rtt_s=0.1)
    learner.on_answer(A, sent_at=4.9, refused=True, now=5.0)
    learner.on_answer(B, sent_at=4.95, refused=True, now=5.05)
    assert learner.settle(now=5.2) is QuotaScope.KEY
    event(learner, own_refusals=STRONG_EVENT, other="aaa")
    assert learner.settle(now=10.0) is QuotaScope.KEY


def test_refusals_of_an_endpoint_whose_own_event_came_first_are_not_evidence() -> None:
    """B's budget ran out first (its own announced wait refuses it for a while); A's runs out
    in the same round trip.  B's refusals in A's window are B's own event, not a shared
    budget: with B's window showing A accepted, the quotas read as per endpoint."""
    learner = ScopeLearner()
    learner.on_event(B, sent_at=0.85, now=0.95, rtt_s=0.1)
    learner.on_answer(B, sent_at=0.85, refused=True, now=0.95)
    learner.on_event(A, sent_at=0.9, now=1.0, rtt_s=0.1)
    for i in range(STRONG_EVENT):
        learner.on_answer(A, sent_at=0.86 + i / 100, refused=False, now=0.97)
        learner.on_answer(A, sent_at=0.9 + i / 100, refused=True, now=1.0)
        learner.on_answer(B, sent_at=0.87 + i / 100, refused=True, now=1.0)
    for i in range(MIN_ANSWERS):
        learner.on_answer(B, sent_at=0.92 + i / 100, refused=True, now=1.05)
    assert learner.settle(now=1.25) is not QuotaScope.KEY
