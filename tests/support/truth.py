"""The database against the simulator's truth: what `runs` should hold, and how it differs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.normalize import V1_STATUS

Rows = dict[str, dict[str, Any]]

# Every content column of `runs`, written out here (not taken from syncd) so the tests
# check syncd's own lists rather than repeat them.
RUN_FIELDS = (
    "worker_slug",
    "worker_title",
    "status",
    "status_raw",
    "err_msg",
    "results",
    "usage_usd",
    "traffic_bytes",
    "started_at",
    "finished_at",
    "duration_s",
    "origin",
    "version",
    "source",
)
# What syncd compares to decide that a row changed (not status_raw, not source).
COMPARED = tuple(f for f in RUN_FIELDS if f not in ("status_raw", "source"))


def _ts(value: int) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, dt.UTC) if value else None


def expected_row(truth: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "worker_slug": truth["scraper_slug"],
        "worker_title": truth["scraper_title"],
        "status": status,
        "err_msg": truth["err_msg"],
        "results": truth["results"],
        "usage_usd": Decimal(truth["usage"]),
        "traffic_bytes": truth["traffic"],
        "started_at": _ts(truth["started_at"]),
        "finished_at": _ts(truth["finished_at"]),
        "duration_s": truth["duration"],
        "origin": truth["origin"],
        "version": truth["version"],
    }


def expected_rows(truth: list[dict[str, Any]], view: str = "both") -> Rows:
    """What `runs` should hold after syncing `view` ("v1", "v2" or "both") to a quiet simulator."""
    out = {}
    for t in truth:
        if view == "v1":
            status = V1_STATUS[t["status_v1"]].value
        elif view == "v2":
            status = t["status_v2"]
        else:
            status = t["status"]
        out[t["slug"]] = expected_row(t, status)
    return out


async def stored_rows(engine: AsyncEngine) -> Rows:
    async with engine.connect() as conn:
        result = await conn.execute(text(f"SELECT slug, {', '.join(COMPARED)} FROM runs"))
        return {r["slug"]: {k: r[k] for k in COMPARED} for r in result.mappings()}


@dataclass(frozen=True)
class Differences:
    """Every way `actual` differs from `expected`, uncapped."""

    missing: list[str]
    unexpected: list[str]
    fields: dict[str, list[str]]  # slug -> the compared fields that differ
    lines: list[str]  # one per missing / unexpected run and per differing field, sorted

    @property
    def equal(self) -> bool:
        return not self.lines

    @property
    def runs(self) -> int:
        """Runs missing, unexpected or with any differing field."""
        return len(self.missing) + len(self.unexpected) + len(self.fields)

    @property
    def count(self) -> int:
        """Runs missing or unexpected, plus fields differing."""
        return len(self.lines)


def compare(expected: Rows, actual: Rows) -> Differences:
    missing = sorted(expected.keys() - actual.keys())
    unexpected = sorted(actual.keys() - expected.keys())
    lines = [f"missing {s}" for s in missing] + [f"unexpected {s}" for s in unexpected]
    fields: dict[str, list[str]] = {}
    for slug in sorted(expected.keys() & actual.keys()):
        for key, want in expected[slug].items():
            if actual[slug][key] != want:
                fields.setdefault(slug, []).append(key)
                lines.append(f"{slug}.{key}: db={actual[slug][key]!r} truth={want!r}")
    return Differences(missing, unexpected, fields, sorted(lines))


def diff(expected: Rows, actual: Rows) -> list[str]:
    """Human-readable differences (empty when equal), capped for readable failures."""
    return compare(expected, actual).lines[:20]


async def differences(
    engine: AsyncEngine, truth: list[dict[str, Any]], *, truth_only: bool = False
) -> Differences:
    """`runs` against the truth (`truth_only`: rows not in the truth are left out)."""
    expected = expected_rows(truth)
    actual = await stored_rows(engine)
    if truth_only:
        actual = {slug: row for slug, row in actual.items() if slug in expected}
    return compare(expected, actual)
