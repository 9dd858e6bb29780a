"""Turn v1 and v2 list items into one `Run` shape.  Pure: no I/O.

Upstream promises little (SPEC §1), so every field is read defensively:

* a record without a usable `slug` or `scraper_slug` cannot be stored: it
  becomes a `Reject` and nothing else;
* a record whose identity is fine but some field is unreadable (usage "n/a",
  a negative timestamp) is stored with that field NULL *and* reported as a
  `Reject` naming the fields, so the run is not lost and the anomaly is kept.
"""

from __future__ import annotations

import datetime as dt
import operator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from syncd.models import Page, Reject, Run, Source, StagedRuns, StageRow, Status, stage_row

V1_STATUS: dict[int, Status] = {
    1: Status.READY,
    2: Status.RUNNING,
    3: Status.SUCCEEDED,
    4: Status.FAILED,
    5: Status.ABORTED,
}
V2_STATUS: dict[str, Status] = {s.value: s for s in Status if s is not Status.UNKNOWN}

# Seconds beyond this are taken to be milliseconds (10**11 s is the year 5138).
_MILLIS_THRESHOLD = 10**11
_MAX_EPOCH_S = 253_402_300_799  # 9999-12-31T23:59:59Z, the last instant Python can hold
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class _FieldError(ValueError):
    """One field could not be read; the message says why (for the reject reason)."""


class Normalized(NamedTuple):
    """The outcome for one item: a run to store, a reject to keep, or both."""

    run: Run | None
    reject: Reject | None


def normalize(item: Any, source: Source) -> Normalized:
    """Normalise one upstream list item of either shape."""
    if type(item) is dict:
        run = _fast(item, source)
        if run is not None:
            return _new_tuple(Normalized, (run, None))
    return _careful(item, source)


# -- the fast path ------------------------------------------------------------
#
# One call per upstream item, millions in a backfill: it reads every field in one
# C call, checks types inline (a Python call per field cost more than the checks)
# and builds the tuples with tuple.__new__ (the NamedTuple constructor is a Python
# function).  Anything it is not sure about goes to `_careful`, which has the
# final word on what an item means.

_FAST_FIELDS = ("slug", "scraper_slug", "scraper_title", "status", "err_msg", "results",
                "usage", "traffic", "started_at", "finished_at", "duration", "origin",
                "version")  # fmt: skip
_read_fields = operator.itemgetter(*_FAST_FIELDS)
_new_tuple = tuple.__new__
_ONE_SECOND = dt.timedelta(seconds=1)
_INT4_LIMIT = 2**31
_INT8_LIMIT = 2**63
# (status, status_raw) for each plain status value of either shape; looked up
# only for an exact int or str (True == 1 and 1.0 == 1 must not match).
_PLAIN_STATUS: dict[int | str, tuple[Status, str]] = {
    **{code: (status, str(code)) for code, status in V1_STATUS.items()},
    **{text: (status, text) for text, status in V2_STATUS.items()},
}
# Usage amounts repeat a lot ("0", "0.065"): parsed Decimals (immutable), with the
# text the stage gets (str of the Decimal: canonical ASCII that PostgreSQL reads as
# the same numeric), are remembered by their exact text.  Bounded in entries and
# key length.
_USAGE_CACHE: dict[str, tuple[Decimal, str]] = {}
_US_PER_S = 1_000_000
_USAGE_CACHE_ENTRIES = 8192
_USAGE_CACHE_KEY_CHARS = 40


def _fast(item: dict[str, Any], source: Source) -> Run | None:
    """The common case, well-typed items, in one pass; None sends the item the careful way.

    It must agree with `_careful` on every item it accepts (a test checks).
    """
    values = _validated(item)
    if values is None:
        return None
    (slug, worker, title, status, err, results, usage, traffic, started, finished, duration,
     origin, version) = values  # fmt: skip
    # 0 and absent both mean "not set".  Exact integer arithmetic, as in `_timestamp`
    # (not fromtimestamp: the C library applies leap seconds under TZ=right/...).
    start_time = _EPOCH + _ONE_SECOND * started if started else None
    finish_time = _EPOCH + _ONE_SECOND * finished if finished else None
    return _new_tuple(Run, (slug, worker, title, status[0], status[1], err, results,
                            None if usage is None else usage[0], traffic, start_time,
                            finish_time, duration, origin, version, source))  # fmt: skip


def _fast_staged(item: dict[str, Any], source: Source) -> StageRow | None:
    """`_fast`, but the run in the stage's shape (models.StageRow): no Decimal or datetime
    is built for a run that goes straight to COPY."""
    values = _validated(item)
    if values is None:
        return None
    (slug, worker, title, status, err, results, usage, traffic, started, finished, duration,
     origin, version) = values  # fmt: skip
    return (slug, worker, title, status[0], status[1], err, results,
            None if usage is None else usage[1], traffic,
            started * _US_PER_S if started else None, finished * _US_PER_S if finished else None,
            duration, origin, version, source)  # fmt: skip


def _validated(item: dict[str, Any]) -> tuple[Any, ...] | None:
    """The fast path's fields of `item` -- status as (Status, status_raw), usage as
    (Decimal, its text) -- or None when the careful path must decide."""
    try:
        values = _read_fields(item)
    except KeyError:  # an absent field reads as None, as in `_careful`
        values = tuple(map(item.get, _FAST_FIELDS))
    (slug, worker, title, status_value, err, results, usage, traffic, started, finished,
     duration, origin, version) = values  # fmt: skip
    kind = type(status_value)
    status = _PLAIN_STATUS.get(status_value) if kind is int or kind is str else None
    if status is None or not (
        type(slug) is str and slug and "\x00" not in slug and slug == slug.strip()
        and type(worker) is str and worker and "\x00" not in worker and worker == worker.strip()
    ):  # fmt: skip
        return None
    if not (
        (title is None or (type(title) is str and "\x00" not in title))
        and (err is None or (type(err) is str and "\x00" not in err))
        and (origin is None or (type(origin) is str and "\x00" not in origin))
        and (version is None or (type(version) is str and "\x00" not in version))
        and (results is None or (type(results) is int and 0 <= results < _INT4_LIMIT))
        and (duration is None or (type(duration) is int and 0 <= duration < _INT4_LIMIT))
        and (traffic is None or (type(traffic) is int and 0 <= traffic < _INT8_LIMIT))
        and (started is None or (type(started) is int and 0 <= started < _MILLIS_THRESHOLD))
        and (finished is None or (type(finished) is int and 0 <= finished < _MILLIS_THRESHOLD))
    ):  # fmt: skip
        return None
    if usage is not None:
        if type(usage) is not str:
            return None
        usd = _USAGE_CACHE.get(usage)
        if usd is None:
            usd = _plain_usage(usage)
            if usd is None:
                return None
        usage = usd
    return (slug, worker, title, status, err, results, usage, traffic, started, finished,
            duration, origin, version)  # fmt: skip


def _plain_usage(text: str) -> tuple[Decimal, str] | None:
    """The Decimal for a plain, finite decimal string and its staged text (remembered);
    None if it is not plain."""
    if not text or text != text.strip():
        return None
    try:
        usage = Decimal(text)
    except InvalidOperation:
        return None
    if not usage.is_finite():
        return None
    entry = (usage, str(usage))
    if len(text) <= _USAGE_CACHE_KEY_CHARS:
        if len(_USAGE_CACHE) >= _USAGE_CACHE_ENTRIES:
            _USAGE_CACHE.clear()
        _USAGE_CACHE[text] = entry
    return entry


# -- the careful path ---------------------------------------------------------


def _careful(item: Any, source: Source) -> Normalized:
    """Every field read defensively, every problem named."""
    if not isinstance(item, dict):
        return Normalized(
            None, Reject(source, item, f"item is {type(item).__name__}, not an object")
        )
    slug = _identity(item.get("slug"))
    if slug is None:
        return Normalized(None, Reject(source, item, "slug is missing or not a non-empty string"))
    worker_slug = _identity(item.get("scraper_slug"))
    if worker_slug is None:
        return Normalized(
            None,
            Reject(source, item, "scraper_slug is missing or not a non-empty string", slug=slug),
        )
    problems: list[str] = []
    status, status_raw = parse_status(item.get("status"))
    if status is Status.UNKNOWN:
        problems.append(f"status: unknown value {status_raw!r} stored as 'unknown'")

    def read(name: str, parser: Any) -> Any:
        try:
            return parser(item.get(name))
        except _FieldError as exc:
            problems.append(f"{name}: {exc}; stored NULL")
            return None

    run = Run(
        slug=slug,
        worker_slug=worker_slug,
        worker_title=read("scraper_title", _text),
        status=status,
        status_raw=status_raw,
        err_msg=read("err_msg", _text),
        results=read("results", _int4),
        usage_usd=read("usage", _usd),
        traffic_bytes=read("traffic", _int8),
        started_at=read("started_at", _timestamp),
        finished_at=read("finished_at", _timestamp),
        duration_s=read("duration", _int4),
        origin=read("origin", _text),
        version=read("version", _text),
        source=source,
    )
    reject = Reject(source, item, "; ".join(problems), slug=slug) if problems else None
    return Normalized(run, reject)


def parse_status(raw: Any) -> tuple[Status, str]:
    """Map either status shape to the canonical one; also return the raw text kept in status_raw.

    Both endpoints are accepted in either shape: nothing promises v2 never
    sends an int or v1 a string.
    """
    if raw is None:
        return Status.UNKNOWN, ""
    if isinstance(raw, bool):
        return Status.UNKNOWN, str(raw).lower()
    if isinstance(raw, int):
        return V1_STATUS.get(raw, Status.UNKNOWN), str(raw)
    if isinstance(raw, str):
        text = raw.strip()
        if text.isdigit():
            return V1_STATUS.get(int(text), Status.UNKNOWN), _clean(raw)
        return V2_STATUS.get(text.lower(), Status.UNKNOWN), _clean(raw)
    return Status.UNKNOWN, _clean(str(raw))


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; dropping it is the only way to keep the rest.
    return text.replace("\x00", "") if "\x00" in text else text


def _identity(raw: Any) -> str | None:
    if not isinstance(raw, str):
        return None
    text = _clean(raw).strip()
    return text or None


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return _clean(raw)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw)
    raise _FieldError(f"expected a string, got {type(raw).__name__}")


def _integer(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise _FieldError("expected an integer, got a boolean")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise _FieldError(f"{_short(raw)} is not an integer")


def _bounded(raw: Any, limit: int) -> int | None:
    value = _integer(raw)
    if value is not None and not 0 <= value < limit:
        raise _FieldError(f"{value} is out of range")
    return value


def _int4(raw: Any) -> int | None:
    """A non-negative count stored in an `integer` column."""
    return _bounded(raw, 2**31)


def _int8(raw: Any) -> int | None:
    """A non-negative count stored in a `bigint` column."""
    return _bounded(raw, 2**63)


def _usd(raw: Any) -> Decimal | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise _FieldError(f"expected a decimal string, got {type(raw).__name__}")
    try:
        value = Decimal(raw.strip() if isinstance(raw, str) else str(raw))
    except InvalidOperation:
        raise _FieldError(f"{_short(raw)} is not a decimal") from None
    if not value.is_finite():
        raise _FieldError(f"{_short(raw)} is not a finite decimal")
    return value


def _timestamp(raw: Any) -> dt.datetime | None:
    """Unix seconds to an aware UTC datetime; 0 and absent mean 'not set'."""
    value = _integer(raw)
    if value is None or value == 0:
        return None
    if value < 0:
        raise _FieldError(f"negative timestamp {value}")
    if value >= _MILLIS_THRESHOLD:
        value //= 1000
    if value > _MAX_EPOCH_S:
        raise _FieldError(f"timestamp {value} is out of range")
    return _EPOCH + dt.timedelta(seconds=value)


def _short(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def split_page(page: Page, source: Source) -> tuple[list[Run], list[Reject]]:
    """Normalise a page's items into runs to store and rejects to keep."""
    runs: list[Run] = []
    rejects: list[Reject] = []
    for item in page.items:
        outcome = normalize(item, source)
        if outcome.run is not None:
            runs.append(outcome.run)
        if outcome.reject is not None:
            rejects.append(outcome.reject)
    return runs, rejects


def stage_page(page: Page, source: Source) -> tuple[list[StageRow], list[Reject]]:
    """`split_page`, the runs in the stage's shape (models.StageRow)."""
    rows: list[StageRow] = []
    rejects: list[Reject] = []
    for item in page.items:
        if type(item) is dict:
            row = _fast_staged(item, source)
            if row is not None:
                rows.append(row)
                continue
        run, reject = _careful(item, source)
        if run is not None:
            rows.append(stage_row(run))
        if reject is not None:
            rejects.append(reject)
    return rows, rejects


@dataclass(slots=True)
class Batch:
    """Pages normalised as they arrive and gathered for one transaction.

    The runs are kept as stage rows, what the store COPYs (`staged`); `runs` builds them
    as Runs for whoever reads them.
    """

    rows: list[StageRow] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    pages: int = 0
    items: int = 0  # upstream items, duplicates and rejects included
    observed_at: dt.datetime | None = None  # when the last page was fetched

    @property
    def runs(self) -> list[Run]:
        return list(self.staged)

    @property
    def staged(self) -> StagedRuns:
        return StagedRuns(self.rows)

    def add(self, page: Page, source: Source) -> None:
        rows, rejects = stage_page(page, source)
        self.rows += rows
        self.rejects += rejects
        self.pages += 1
        self.items += len(page.items)
        self.observed_at = page.fetched_at
