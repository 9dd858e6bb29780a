"""Normalisation of both record shapes: every field, every status, every way to be bad."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd import normalize as normalize_module
from syncd.models import Page, Source, Status, run_from_stage, stage_row
from syncd.normalize import (
    Batch,
    _careful,
    _fast,
    normalize,
    parse_status,
    split_page,
    stage_page,
)

V1_ITEM: dict[str, Any] = {
    "status": 3,
    "err_msg": "",
    "slug": "01KSFDS8XWTJME33C08XMCR6B9",
    "scraper_title": "News Collection 20260305",
    "scraper_slug": "01KPD6M5YVHWCNQCRK32BD02TP",
    "results": 4,
    "usage": "0.065",
    "started_at": 1773305309,
    "finished_at": 1773305316,
    "duration": 7,
    "origin": "api",
    "traffic": 23108,
    "version": "v1.0.5",
}
V2_ITEM: dict[str, Any] = {
    "duration": 10,
    "err_msg": "",
    "finished_at": 1782091210,
    "origin": "openapi",
    "results": 1,
    "scraper_slug": "demo-worker",
    "scraper_title": "Demo Worker",
    "slug": "01KKDXV2G26BT7NH4ZQR2R4NPZ",
    "started_at": 1782091200,
    "status": "running",
    "traffic": 0,
    "usage": "1.00",
    "version": "latest",
}


T_PAGE = dt.datetime(2026, 3, 12, 8, 0, tzinfo=dt.UTC)


def utc(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def test_v1_vendor_example_maps_every_field() -> None:
    """The v1 docs' example item becomes a fully populated Run."""
    result = normalize(V1_ITEM, Source.V1)
    assert result.reject is None and result.run is not None
    run = result.run
    assert run.slug == "01KSFDS8XWTJME33C08XMCR6B9"
    assert run.worker_slug == "01KPD6M5YVHWCNQCRK32BD02TP"
    assert run.worker_title == "News Collection 20260305"
    assert (run.status, run.status_raw) == (Status.SUCCEEDED, "3")
    assert run.err_msg == "" and run.results == 4
    assert run.usage_usd == Decimal("0.065") and run.traffic_bytes == 23108
    assert run.started_at == utc(1773305309) and run.finished_at == utc(1773305316)
    assert run.duration_s == 7 and run.origin == "api" and run.version == "v1.0.5"
    assert run.source is Source.V1


def test_v2_vendor_example_maps_every_field() -> None:
    """The v2 docs' example item becomes a fully populated Run."""
    result = normalize(V2_ITEM, Source.V2)
    assert result.reject is None and result.run is not None
    run = result.run
    assert (run.status, run.status_raw) == (Status.RUNNING, "running")
    assert run.usage_usd == Decimal("1.00") and run.traffic_bytes == 0
    assert run.started_at == utc(1782091200) and run.duration_s == 10
    assert run.worker_slug == "demo-worker" and run.source is Source.V2


@pytest.mark.parametrize(
    ("raw", "status", "status_raw"),
    [
        (1, Status.READY, "1"),
        (2, Status.RUNNING, "2"),
        (3, Status.SUCCEEDED, "3"),
        (4, Status.FAILED, "4"),
        (5, Status.ABORTED, "5"),
        ("3", Status.SUCCEEDED, "3"),
        (0, Status.UNKNOWN, "0"),
        (9, Status.UNKNOWN, "9"),
        ("ready", Status.READY, "ready"),
        ("running", Status.RUNNING, "running"),
        ("succeeded", Status.SUCCEEDED, "succeeded"),
        ("failed", Status.FAILED, "failed"),
        ("aborting", Status.ABORTING, "aborting"),
        ("aborted", Status.ABORTED, "aborted"),
        ("Running", Status.RUNNING, "Running"),
        ("exploded", Status.UNKNOWN, "exploded"),
        ("unknown", Status.UNKNOWN, "unknown"),
        (True, Status.UNKNOWN, "true"),
        (None, Status.UNKNOWN, ""),
        (3.5, Status.UNKNOWN, "3.5"),
    ],
)
def test_status_mapping(raw: Any, status: Status, status_raw: str) -> None:
    """Both status shapes map to the canonical set; anything else is unknown, raw kept."""
    assert parse_status(raw) == (status, status_raw)


@pytest.mark.parametrize(
    ("field", "value", "attr", "expected"),
    [
        ("finished_at", 0, "finished_at", None),
        ("finished_at", None, "finished_at", None),
        ("started_at", "1773305309", "started_at", utc(1773305309)),
        ("started_at", 1773305309000, "started_at", utc(1773305309)),
        ("usage", 0.5, "usage_usd", Decimal("0.5")),
        ("usage", "", "usage_usd", None),
        ("usage", " 2.50 ", "usage_usd", Decimal("2.50")),
        ("results", "12", "results", 12),
        ("results", 12.0, "results", 12),
        ("traffic", 2**40, "traffic_bytes", 2**40),
        ("version", 2, "version", "2"),
        ("err_msg", "a\x00b", "err_msg", "ab"),
        ("scraper_title", None, "worker_title", None),
        ("slug", "a\x00b", "slug", "ab"),
        (
            "started_at",
            253_402_300_799_999,
            "started_at",
            dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        ),
    ],
)
def test_lenient_field_parsing(field: str, value: Any, attr: str, expected: Any) -> None:
    """Readable variations are accepted without a reject."""
    result = normalize({**V2_ITEM, field: value}, Source.V2)
    assert result.reject is None, result.reject
    assert getattr(result.run, attr) == expected


@pytest.mark.parametrize(
    ("field", "value", "attr", "reason"),
    [
        ("usage", "n/a", "usage_usd", "usage: 'n/a' is not a decimal"),
        ("usage", "NaN", "usage_usd", "not a finite decimal"),
        ("started_at", -5, "started_at", "negative timestamp"),
        ("started_at", "yesterday", "started_at", "is not an integer"),
        ("finished_at", 10**17, "finished_at", "out of range"),
        ("results", -1, "results", "out of range"),
        ("results", 2**31, "results", "out of range"),
        ("duration", True, "duration_s", "boolean"),
        ("err_msg", {"x": 1}, "err_msg", "expected a string"),
        ("results", 12.5, "results", "12.5 is not an integer"),
        ("duration", 2**31, "duration_s", "out of range"),
        ("traffic", 2**63, "traffic_bytes", "out of range"),
    ],
)
def test_bad_field_stores_null_and_reports(field: str, value: Any, attr: str, reason: str) -> None:
    """An unreadable field is stored NULL, the run kept, and a reject names the field."""
    item = {**V1_ITEM, field: value}
    result = normalize(item, Source.V1)
    assert result.run is not None and getattr(result.run, attr) is None
    assert result.reject is not None
    assert reason in result.reject.reason
    assert result.reject.raw is item and result.reject.slug == V1_ITEM["slug"]


def test_unknown_status_keeps_run_and_reports() -> None:
    """An unknown status is stored as 'unknown' with the raw value, and reported."""
    result = normalize({**V1_ITEM, "status": 9}, Source.V1)
    assert result.run is not None
    assert (result.run.status, result.run.status_raw) == (Status.UNKNOWN, "9")
    assert result.reject is not None and "unknown value '9'" in result.reject.reason


@pytest.mark.parametrize(
    "item",
    [
        {**V1_ITEM, "started_at": "0", "finished_at": "0"},
        {**V1_ITEM, "status": 9, "started_at": 0, "finished_at": 0},
        {**V2_ITEM, "status": "exploded", "started_at": 0.0, "finished_at": " 0 "},
        {**V2_ITEM, "usage": "n/a", "started_at": 0, "finished_at": 0},
    ],
)
def test_zero_timestamps_are_null_on_the_careful_path(item: dict[str, Any]) -> None:
    """An item left to the careful path still reads 0 as "not set": NULL, never 1970-01-01."""
    assert _fast(item, Source.V1) is None  # this item really goes the careful way
    result = normalize(item, Source.V1)
    assert result.run is not None
    assert (result.run.started_at, result.run.finished_at) == (None, None)
    assert result.reject is None or "_at" not in result.reject.reason


@pytest.mark.parametrize(
    ("ts", "seconds"),
    [
        (10**11 - 1, 10**11 - 1),  # still seconds (the year 5138)
        (10**11, 10**8),  # from here on, milliseconds
        (10**11 + 999, 10**8),
        (1773305309000, 1773305309),
    ],
)
@pytest.mark.parametrize("status", [3, 9], ids=["fast", "careful"])
def test_millisecond_timestamps_start_at_10_to_the_11(ts: int, seconds: int, status: int) -> None:
    """Timestamps below 10**11 are seconds, from 10**11 on milliseconds, on both paths."""
    result = normalize({**V1_ITEM, "status": status, "started_at": ts}, Source.V1)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert result.run is not None and result.run.started_at == epoch + dt.timedelta(seconds=seconds)


def test_a_page_keeps_both_the_run_and_the_reject_of_a_partly_bad_item() -> None:
    """An item stored with a NULL field is also kept as a reject: the anomaly is never dropped."""
    partly_bad = {**V1_ITEM, "slug": "R2", "usage": "n/a"}
    page = Page(
        items=[V1_ITEM, partly_bad, {"slug": None}], count=3, fetched_at=dt.datetime.now(dt.UTC)
    )
    runs, rejects = split_page(page, Source.V1)
    assert [r.slug for r in runs] == [V1_ITEM["slug"], "R2"]
    assert [(r.slug, r.raw) for r in rejects] == [("R2", partly_bad), (None, {"slug": None})]


def test_a_batch_counts_every_upstream_item() -> None:
    """Batch.items counts what upstream sent, rejects included (it becomes rows_seen)."""
    t1, t2 = (dt.datetime(2026, 3, 5, 12, m, tzinfo=dt.UTC) for m in (0, 1))
    batch = Batch()
    batch.add(Page(items=[V1_ITEM, {"slug": None}, "junk"], count=4, fetched_at=t1), Source.V1)
    batch.add(Page(items=[{**V1_ITEM, "slug": "R2"}], count=4, fetched_at=t2), Source.V1)
    assert (batch.pages, batch.items, len(batch.runs), len(batch.rejects)) == (2, 4, 2, 2)
    assert batch.observed_at == t2


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({**V2_ITEM, "slug": None}, "slug is missing"),
        ({k: v for k, v in V2_ITEM.items() if k != "slug"}, "slug is missing"),
        ({**V2_ITEM, "slug": "   "}, "slug is missing"),
        ({**V2_ITEM, "slug": 42}, "slug is missing"),
        ({**V2_ITEM, "scraper_slug": ""}, "scraper_slug is missing"),
        ("not an object", "item is str"),
        (None, "item is NoneType"),
    ],
)
def test_record_without_identity_is_rejected(item: Any, reason: str) -> None:
    """Without a slug and worker slug a record cannot be stored: reject only."""
    result = normalize(item, Source.V2)
    assert result.run is None
    assert result.reject is not None and reason in result.reject.reason
    assert result.reject.raw is item


def test_extra_fields_are_ignored() -> None:
    """Unexpected extra fields neither break nor reject a record."""
    result = normalize({**V2_ITEM, "new_field": [1, 2], "priority": "high"}, Source.V2)
    assert result.run is not None and result.reject is None


def test_huge_err_msg_is_kept_whole() -> None:
    """A 100 KB error message is stored as is."""
    result = normalize({**V2_ITEM, "err_msg": "x" * 100_000}, Source.V2)
    assert result.run is not None and result.run.err_msg == "x" * 100_000


_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["", " 3 ", "0.065", "n/a", "NaN", "1e3", "running", "RUNNING", "a\x00b",
                     "1773305309", "aborted"]),
)  # fmt: skip
_FIELDS = ["slug", "scraper_slug", "scraper_title", "status", "err_msg", "results", "usage",
           "traffic", "started_at", "finished_at", "duration", "origin", "version"]  # fmt: skip


def _any_item(test: Callable[..., None]) -> Callable[..., None]:
    """400 items of either shape, up to four fields changed to odd values, from either stream."""
    cases = given(
        base=st.sampled_from([V1_ITEM, V2_ITEM]),
        changes=st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=4),
        source=st.sampled_from(list(Source)),
    )
    return settings(max_examples=400, deadline=None)(cases(test))


@_any_item
def test_fast_path_agrees_with_careful_path(
    base: dict[str, Any], changes: dict[str, Any], source: Source
) -> None:
    """Whatever the fast path accepts, the careful path turns into the same run, cleanly."""
    item = {**base, **changes}
    fast = _fast(item, source)
    careful = _careful(item, source)
    if fast is not None:
        assert careful.reject is None
        assert fast == careful.run
        assert [type(a) for a in fast] == [type(b) for b in careful.run]


@_any_item
def test_staged_page_holds_what_split_page_makes(
    base: dict[str, Any], changes: dict[str, Any], source: Source
) -> None:
    """A batch's stage rows, fast or careful, are split_page's runs in the stage's shape."""
    page = Page(items=[{**base, **changes}, base, "junk"], count=None, fetched_at=T_PAGE)
    runs, rejects = split_page(page, source)
    rows, staged_rejects = stage_page(page, source)
    assert rows == [stage_row(r) for r in runs]
    assert [list(map(type, row)) for row in rows] == [list(map(type, stage_row(r))) for r in runs]
    assert [run_from_stage(row) for row in rows] == runs
    assert staged_rejects == rejects


def test_fast_path_takes_the_vendor_examples() -> None:
    """Well-typed items, the common case, go the fast way."""
    assert _fast(V1_ITEM, Source.V1) is not None
    assert _fast(V2_ITEM, Source.V2) is not None


def test_fast_path_reads_absent_fields_as_null() -> None:
    """An item missing optional fields still goes the fast way, those fields None."""
    item = {k: V2_ITEM[k] for k in ("slug", "scraper_slug", "status")}
    fast = _fast(item, Source.V2)
    assert fast is not None and fast == _careful(item, Source.V2).run
    assert fast.usage_usd is None and fast.started_at is None and fast.worker_title is None


@pytest.mark.parametrize("ts", [1, 86_399, 86_400, 2**31, 10**11 - 1])
def test_fast_path_timestamps_match_the_careful_path(ts: int) -> None:
    """Fast-path timestamps equal the careful path's up to the millisecond threshold."""
    item = {**V1_ITEM, "started_at": ts, "finished_at": ts}
    fast = _fast(item, Source.V1)
    assert fast is not None and fast == _careful(item, Source.V1).run
    assert fast.started_at == dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=ts)
    assert fast.started_at is not None and fast.started_at.tzinfo is dt.UTC


def test_fast_path_leaves_millisecond_timestamps_to_the_careful_path() -> None:
    """A timestamp past the seconds range is not the fast path's to interpret."""
    assert _fast({**V1_ITEM, "started_at": 1773305309000}, Source.V1) is None


@pytest.mark.skipif(
    not os.path.exists("/usr/share/zoneinfo/right/UTC") or not hasattr(time, "tzset"),
    reason="needs the right/UTC zone and time.tzset",
)
def test_timestamps_ignore_the_local_leap_second_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unix seconds are converted arithmetically: TZ=right/... (leap seconds) changes nothing."""
    expected = normalize(V1_ITEM, Source.V1).run
    monkeypatch.setenv("TZ", "right/UTC")
    time.tzset()
    try:
        assert normalize(V1_ITEM, Source.V1).run == expected
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("usage", ["0", "0.065", "1.00", "12_5", "1e3", "-0"])
def test_remembered_usage_equals_a_fresh_parse(usage: str) -> None:
    """A usage amount read twice (the second time remembered) is the same Decimal, exactly."""
    first = _fast({**V2_ITEM, "usage": usage}, Source.V2)
    again = _fast({**V2_ITEM, "usage": usage}, Source.V2)
    assert first is not None and again is not None
    assert again.usage_usd == first.usage_usd == Decimal(usage)
    assert str(again.usage_usd) == str(Decimal(usage))  # same exponent, not just equal


@pytest.mark.parametrize("usage", ["n/a", "NaN", "Infinity", " 1", "", "1 "])
def test_usage_that_is_not_plain_is_never_remembered(usage: str) -> None:
    """Amounts the fast path cannot take go the careful way every time."""
    for _ in range(2):
        assert _fast({**V2_ITEM, "usage": usage}, Source.V2) is None
    assert usage not in normalize_module._USAGE_CACHE


def test_usage_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The remembered amounts never exceed their bound, and long amounts are not kept."""
    monkeypatch.setattr(normalize_module, "_USAGE_CACHE", {})
    monkeypatch.setattr(normalize_module, "_USAGE_CACHE_ENTRIES", 3)
    for cents in range(10):
        run = _fast({**V2_ITEM, "usage": f"0.{cents:02d}"}, Source.V2)
        assert run is not None and run.usage_usd == Decimal(f"0.{cents:02d}")
        assert len(normalize_module._USAGE_CACHE) <= 3
    long_amount = "1." + "0" * 60
    assert _fast({**V2_ITEM, "usage": long_amount}, Source.V2) is not None
    assert long_amount not in normalize_module._USAGE_CACHE
