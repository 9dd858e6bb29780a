"""Helpers shared by the end-to-end tests: compare the database with the simulator's truth."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncd.normalize import V1_STATUS

COMPARED = (
    "worker_slug",
    "worker_title",
    "status",
    "err_msg",
    "results",
    "usage_usd",
    "traffic_bytes",
    "started_at",
    "finished_at",
    "duration_s",
    "origin",
    "version",
)


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


def expected_rows(truth: list[dict[str, Any]], view: str = "both") -> dict[str, dict[str, Any]]:
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


async def stored_rows(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(text(f"SELECT slug, {', '.join(COMPARED)} FROM runs"))
        return {r["slug"]: {k: r[k] for k in COMPARED} for r in result.mappings()}


def diff(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable differences (empty when equal), capped for readable failures."""
    problems = [f"missing {s}" for s in expected.keys() - actual.keys()]
    problems += [f"unexpected {s}" for s in actual.keys() - expected.keys()]
    for slug in expected.keys() & actual.keys():
        for key, want in expected[slug].items():
            if actual[slug][key] != want:
                problems.append(f"{slug}.{key}: db={actual[slug][key]!r} truth={want!r}")
    return sorted(problems)[:20]
