"""The records between modules: statuses and their lifecycle order, pages, batch results."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from syncd.models import (
    IN_FLIGHT_STATUSES,
    STATUS_RANK,
    TERMINAL_STATUSES,
    Page,
    Run,
    Source,
    StagedRuns,
    Status,
    StoreResult,
    run_from_stage,
    stage_row,
)

RUN = Run(
    slug="R1", worker_slug="w", worker_title=None, status=Status.SUCCEEDED, status_raw="3",
    err_msg="", results=5, usage_usd=Decimal("0.0650"), traffic_bytes=2**40,
    started_at=dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),
    finished_at=dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),
    duration_s=7, origin="api", version=None, source=Source.V1,
)  # fmt: skip


def test_every_status_is_ranked_and_either_terminal_in_flight_or_unknown() -> None:
    """The lifecycle table covers every status; terminal and in-flight split the known ones."""
    assert set(STATUS_RANK) == set(Status)
    assert not TERMINAL_STATUSES & IN_FLIGHT_STATUSES
    assert TERMINAL_STATUSES | IN_FLIGHT_STATUSES | {Status.UNKNOWN} == set(Status)


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        (Status.READY, Status.RUNNING),
        (Status.RUNNING, Status.ABORTING),
        (Status.ABORTING, Status.ABORTED),
        (Status.RUNNING, Status.SUCCEEDED),
        (Status.RUNNING, Status.FAILED),
        (Status.UNKNOWN, Status.READY),
    ],
)
def test_lifecycle_moves_forward(earlier: Status, later: Status) -> None:
    """A later stage ranks higher; `unknown` ranks lowest, so it never overwrites a known one."""
    assert STATUS_RANK[earlier] < STATUS_RANK[later]


def test_terminal_statuses_rank_alike_and_above_every_in_flight_one() -> None:
    """Terminal states tie (a run may move sideways between them), above all in-flight ones."""
    assert len({STATUS_RANK[s] for s in TERMINAL_STATUSES}) == 1
    terminal = STATUS_RANK[Status.SUCCEEDED]
    assert all(STATUS_RANK[s] < terminal for s in IN_FLIGHT_STATUSES)
    assert min(STATUS_RANK.values()) == STATUS_RANK[Status.UNKNOWN]


def test_sources_are_the_stream_names() -> None:
    """A Source is its stream's name, as stored and labelled."""
    assert [s.value for s in Source] == ["v1", "v2"] and Source("v2") is Source.V2


def test_page_metadata_defaults_to_unknown() -> None:
    """A page's page_index, page_size and request_id are None unless upstream sent them."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    page = Page(items=[], count=None, fetched_at=now)
    assert (page.page_index, page.page_size, page.request_id) == (None, None, None)


def test_store_result_changed_counts_inserts_and_updates() -> None:
    """`changed` is what a batch inserted or updated, not what it saw or rejected."""
    assert StoreResult(seen=9, inserted=2, updated=3, rejected=1).changed == 5


def test_store_result_add_sums_counts_but_not_changed_slugs() -> None:
    """Adding a batch sums every count; its changed slugs stay with the batch."""
    total = StoreResult(seen=1, inserted=1, changed_slugs=frozenset({"a"}))
    total.add(StoreResult(seen=4, inserted=1, updated=2, rejected=1, history_added=3,
                          changed_slugs=frozenset({"b", "c"})))  # fmt: skip
    assert (total.seen, total.inserted, total.updated, total.rejected, total.history_added) == (
        5, 2, 2, 1, 3,
    )  # fmt: skip
    assert total.changed_slugs == frozenset({"a"})


@pytest.mark.parametrize(
    "run",
    [RUN, RUN._replace(usage_usd=None, started_at=None, finished_at=None),
     RUN._replace(usage_usd=Decimal("1E+2"), started_at=dt.datetime(1, 1, 1, tzinfo=dt.UTC))],
)  # fmt: skip
def test_a_stage_row_holds_the_run_exactly(run: Run) -> None:
    """Usage as text and times as epoch microseconds convert back to the same values."""
    row = stage_row(run)
    assert row[7] is None or isinstance(row[7], str)
    assert all(v is None or type(v) is int for v in (row[9], row[10]))
    back = run_from_stage(row)
    assert back == run and str(back.usage_usd) == str(run.usage_usd)


def test_staged_runs_read_as_runs() -> None:
    """StagedRuns keeps stage rows and reads them as Runs: length, iteration, indexes, slices."""
    other = RUN._replace(slug="R2")
    staged = StagedRuns([stage_row(RUN), stage_row(other)])
    assert len(staged) == 2 and list(staged) == [RUN, other]
    assert staged[1] == other and staged[-2] == RUN and staged[1:] == [other]
