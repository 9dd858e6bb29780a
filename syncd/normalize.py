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
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from syncd.models import Reject, Run, Source, Status

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
            return Normalized(run, None)
    return _careful(item, source)


def _plain_text(value: Any) -> bool:
    return value is None or (type(value) is str and "\x00" not in value)


def _plain_count(value: Any, limit: int) -> bool:
    return value is None or (type(value) is int and 0 <= value < limit)


def _plain_time(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value < _MILLIS_THRESHOLD)


def _as_time(value: int | None) -> dt.datetime | None:
    return _EPOCH + dt.timedelta(seconds=value) if value else None


def _plain_usage(value: Any) -> Decimal | bool | None:
    """The Decimal for a plain decimal string (None when absent); False if not plain."""
    if value is None:
        return None
    if type(value) is not str or not value or value != value.strip():
        return False
    try:
        usage = Decimal(value)
    except InvalidOperation:
        return False
    return usage if usage.is_finite() else False


def _fast(item: dict[str, Any], source: Source) -> Run | None:
    """The common case, well-typed items, in one pass; None sends the item the careful way.

    It must agree with `_careful` on every item it accepts (a test checks).
    """
    get = item.get
    slug: Any = get("slug")
    worker: Any = get("scraper_slug")
    status, status_raw = _plain_status(get("status"))
    if status is None or not (_plain_identity(slug) and _plain_identity(worker)):
        return None
    title, err, origin, version = (
        get("scraper_title"),
        get("err_msg"),
        get("origin"),
        get("version"),
    )
    results, traffic, duration = get("results"), get("traffic"), get("duration")
    started, finished = get("started_at"), get("finished_at")
    if not (
        _plain_text(title) and _plain_text(err) and _plain_text(origin) and _plain_text(version)
        and _plain_count(results, 2**31) and _plain_count(duration, 2**31)
        and _plain_count(traffic, 2**63) and _plain_time(started) and _plain_time(finished)
    ):  # fmt: skip
        return None
    usage = _plain_usage(get("usage"))
    if usage is False or usage is True:
        return None
    start_time, finish_time = _as_time(started), _as_time(finished)
    return Run(slug, worker, title, status, status_raw, err, results, usage, traffic,
               start_time, finish_time, duration, origin, version, source)  # fmt: skip


def _plain_identity(value: Any) -> bool:
    return type(value) is str and value != "" and "\x00" not in value and value == value.strip()


def _plain_status(raw: Any) -> tuple[Status | None, str]:
    if type(raw) is int:
        return V1_STATUS.get(raw), str(raw)
    if type(raw) is str:
        return V2_STATUS.get(raw), raw
    return None, ""


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
